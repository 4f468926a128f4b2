#!/usr/bin/env bash
# Local dev stack for Northwest: ZooKeeper (standalone) + the `nisshi` Kafka-protocol broker.
#
#   deploy/stack.sh install   install missing apt packages and the pinned nisshi binary
#   deploy/stack.sh up        install, then start both services and wait until they serve
#   deploy/stack.sh down      stop both (TERM, then KILL after a grace period)
#   deploy/stack.sh status    up/down, pid, port, data dir, log of each (exit 3 if one is down)
#   deploy/stack.sh reset     down, then delete both data dirs
#   deploy/stack.sh env       print `export NW_ZK=...` / `export NW_KAFKA=...`
#
# Every command is idempotent. See deploy/README.md.
set -euo pipefail

# ---------------------------------------------------------------------------------------------
# Configuration (all overridable from the environment)
# ---------------------------------------------------------------------------------------------
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT
readonly HOST=127.0.0.1
readonly ZK_PORT="${NW_ZK_PORT:-2181}"
readonly KAFKA_PORT="${NW_KAFKA_PORT:-9092}"
readonly STACK_DIR="${NW_STACK_DIR:-$REPO_ROOT/.northwest/stack}"
readonly ZK_TIMEOUT="${NW_ZK_TIMEOUT:-60}"        # seconds; ~5 s is normal with 166k znodes
readonly KAFKA_TIMEOUT="${NW_KAFKA_TIMEOUT:-60}"  # seconds; normally well under 1 s
readonly STOP_GRACE="${NW_STOP_GRACE:-20}"        # seconds between TERM and KILL

readonly APT_PACKAGES=(zookeeper build-essential pkg-config libclang-dev cmake)

# The broker binary is built once per machine and shared by every checkout.
readonly NISSHI_VERSION=0.8.1
readonly CACHE_DIR="${NORTHWEST_CACHE:-$HOME/.cache/northwest}"
readonly NISSHI_ROOT="$CACHE_DIR/nisshi-$NISSHI_VERSION"
readonly NISSHI_BIN="$NISSHI_ROOT/bin/nisshi"
readonly NISSHI_BUILD_DIR="$CACHE_DIR/nisshi-build"
readonly NISSHI_LOCK="$CACHE_DIR/nisshi-install.lock"
readonly NISSHI_INSTALL_LOG="$CACHE_DIR/logs/nisshi-install.log"

# Layout under $STACK_DIR: one data dir per service, all logs and pid files side by side.
readonly LOG_DIR="$STACK_DIR/logs"
readonly RUN_DIR="$STACK_DIR/run"
readonly ZK_CONF_DIR="$STACK_DIR/zookeeper/conf"
readonly ZK_DATA_DIR="$STACK_DIR/zookeeper/data"
readonly ZK_CFG="$ZK_CONF_DIR/zoo.cfg"
readonly ZK_LOG="$LOG_DIR/zookeeper.log"   # log4j output: the useful one
readonly ZK_OUT="$LOG_DIR/zookeeper.out"   # JVM stdout/stderr (crashes, bad options)
readonly KAFKA_DATA_DIR="$STACK_DIR/nisshi/data"
readonly KAFKA_LOG="$LOG_DIR/nisshi.log"
# Relative to $KAFKA_DATA_DIR, which is the broker's working directory.
# Maintenance (retention scan of every delete-policy record, compaction) holds sqlite's write
# lock while it runs, stalling produce and fetch: run it every 30 s, not every second.
readonly KAFKA_STORAGE='sqlite://nisshi.db?maintenance_interval=30s'
readonly KAFKA_URL="tcp://$HOST:$KAFKA_PORT"

readonly ZK_JARS=(/usr/share/java/zookeeper.jar /usr/share/java/slf4j-log4j12.jar
                  /usr/share/java/log4j-1.2.jar)

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

# Logs are appended across restarts; each start writes a marker line so that an error report
# shows only what the current run wrote, not an older failure.
readonly LOG_MARKER='=== started by deploy/stack.sh'
mark_log() { printf '%s at %s ===\n' "$LOG_MARKER" "$(date -u +%FT%TZ)" >>"$1"; }

# Last lines of a log file since the latest start marker, to put the likely cause under an error.
show_tail() {
  local file=$1
  [[ -s $file ]] || return 0
  printf '[stack] --- last lines of %s ---\n' "$file" >&2
  awk -v m="$LOG_MARKER" 'index($0, m) == 1 { n = 0; next } { buf[n++] = $0 }
       END { for (i = (n > 20 ? n - 20 : 0); i < n; i++) print "    " buf[i] }' "$file" >&2
}

pid_alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

# NUL-separated argv of a process, as one space-separated line.
# (2>/dev/null first: the process may vanish between the glob and the read.)
proc_cmdline() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" || true; }

# Is some process listening on TCP $port (any local address)? Prefer ss, which also sees
# listeners on other addresses; fall back to a loopback connect when ss is missing.
port_in_use() {
  local port=$1
  if command -v ss >/dev/null 2>&1; then
    [[ -n $(ss -Hltn "sport = :$port" 2>/dev/null) ]]
  else
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$port" 2>/dev/null
  fi
}

# Human-readable owner of a listening port, best effort (ss -p needs privileges for others).
port_owner() {
  local port=$1
  command -v ss >/dev/null 2>&1 || return 0
  ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'users:(([^)]*))' | head -n 1 || true
}

# ---------------------------------------------------------------------------------------------
# Process bookkeeping. A pid file alone is not trusted: the pid may have been reused by an
# unrelated process after a crash or reboot, so every pid is checked against a signature that
# only our own instance has (its config path / its working directory).
# ---------------------------------------------------------------------------------------------
pid_file()  { echo "$RUN_DIR/$1.pid"; }
port_file() { echo "$RUN_DIR/$1.port"; }

is_ours() {
  local svc=$1 pid=$2 cmd
  pid_alive "$pid" || return 1
  cmd=$(proc_cmdline "$pid")
  case $svc in
    zookeeper) [[ $cmd == *QuorumPeerMain* && $cmd == *"$ZK_CFG"* ]] ;;
    nisshi)    [[ $cmd == *nisshi*broker* ]] &&
               [[ $(readlink "/proc/$pid/cwd" 2>/dev/null) == "$KAFKA_DATA_DIR" ]] ;;
    *) return 1 ;;
  esac
}

# Pid of our running instance of $svc, or nothing. Falls back to scanning /proc so that an
# instance whose pid file was lost can still be found (and stopped) instead of blocking the port.
find_pid() {
  local svc=$1 pid="" p
  [[ -f $(pid_file "$svc") ]] && pid=$(<"$(pid_file "$svc")")
  if is_ours "$svc" "$pid"; then echo "$pid"; return 0; fi
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [[ $p == "$$" ]] && continue
    if is_ours "$svc" "$p"; then echo "$p"; return 0; fi
  done
  return 0
}

# Start "$@" detached (own session, immune to SIGHUP, stdin closed) in $dir with output to $out.
# setsid/nohup/bash all exec into the service, so no shell lingers holding the caller's stdout.
# The child writes its own pid before exec (right whether or not setsid forks) and closes every
# fd above 2, so the daemon never holds a caller's pipe or lock open either.
# shellcheck disable=SC2016  # expanded by the child shell, not here
readonly SPAWN_SH='echo $$ >"$0"
cd "$1" || exit 1
shift
for fd in /proc/$$/fd/*; do fd=${fd##*/}; ((fd > 2)) && eval "exec $fd>&-"; done
exec "$@"'
spawn() {
  local svc=$1 dir=$2 out=$3; shift 3
  local pf; pf=$(pid_file "$svc")
  mkdir -p "$RUN_DIR"
  rm -f "$pf"
  setsid nohup bash -c "$SPAWN_SH" "$pf" "$dir" "$@" >>"$out" 2>&1 </dev/null &
  local i
  for ((i = 0; i < 50; i++)); do [[ -s $pf ]] && break; sleep 0.1; done
  [[ -s $pf ]] || die "$svc did not start (no pid file); see $out"
}

# TERM, wait up to $STOP_GRACE seconds, then KILL.
stop_service() {
  local svc=$1 pid i
  pid=$(find_pid "$svc")
  if [[ -z $pid ]]; then
    log "$svc: already down"
  else
    log "$svc: stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_GRACE * 10; i++)); do pid_alive "$pid" || break; sleep 0.1; done
    if pid_alive "$pid"; then
      log "$svc: still alive after ${STOP_GRACE}s, sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do pid_alive "$pid" || break; sleep 0.1; done
      pid_alive "$pid" && die "$svc: pid $pid survived KILL"
    fi
    log "$svc: stopped"
  fi
  rm -f "$(pid_file "$svc")" "$(port_file "$svc")"
}

# Refuse to silently talk to a running instance that listens on another port than requested.
check_same_port() {
  local svc=$1 want=$2 have=""
  [[ -f $(port_file "$svc") ]] && have=$(<"$(port_file "$svc")")
  if [[ -n $have && $have != "$want" ]]; then
    die "$svc is already running on port $have, but port $want was requested; run '$0 down' first"
  fi
}

# ---------------------------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------------------------
install_apt_packages() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    # Status, not just exit code: a removed package with leftover config still "exists".
    dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    log "apt packages: all present (${APT_PACKAGES[*]})"
    return 0
  fi
  local sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null 2>&1 || die "need root or sudo to install: ${missing[*]}"
    sudo=(sudo)
  fi
  log "apt packages: installing ${missing[*]}"
  # `env` because sudo drops DEBIAN_FRONTEND from the environment by default.
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
}

# Pids of `cargo install` processes that target our install root but were not started by this
# script (e.g. a provisioning job): they hold no flock of ours, so they are detected by argv.
foreign_cargo_installs() {
  local p cmd
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    cmd=$(proc_cmdline "$p")
    [[ $cmd == *cargo*" install "*nisshi* ]] || continue
    [[ $cmd == *"--root $NISSHI_ROOT "* || $cmd == *"--root=$NISSHI_ROOT "* ]] && echo "$p"
  done
  return 0
}

install_nisshi() {
  if [[ -x $NISSHI_BIN ]]; then
    log "nisshi $NISSHI_VERSION: present ($NISSHI_BIN)"
    return 0
  fi
  mkdir -p "$CACHE_DIR/logs"
  # Subshell: the lock fd closes when it exits, so the daemons started later never inherit it.
  (
    exec 9>"$NISSHI_LOCK"
    if ! flock -n 9; then
      log "nisshi: another stack.sh is installing it; waiting for the lock ($NISSHI_LOCK)"
      flock 9
    fi
    # Re-check under the lock: whoever held it may have just finished.
    if [[ -x $NISSHI_BIN ]]; then
      log "nisshi $NISSHI_VERSION: present ($NISSHI_BIN)"
      exit 0
    fi

    local pids
    pids=$(foreign_cargo_installs | paste -sd ' ')
    if [[ -n $pids ]]; then
      log "nisshi: a cargo install into $NISSHI_ROOT is already running (pid $pids);"
      log "        waiting for it instead of starting a second one. The first install takes"
      log "        ~20-35 minutes; progress: tail -f $NISSHI_INSTALL_LOG"
      local waited=0
      while [[ -n $(foreign_cargo_installs) ]]; do
        sleep 10
        waited=$((waited + 10))
        ((waited % 120 == 0)) && log "nisshi: still building... ($((waited / 60)) min waited)"
      done
      if [[ -x $NISSHI_BIN ]]; then
        log "nisshi $NISSHI_VERSION: installed by the other process ($NISSHI_BIN)"
        exit 0
      fi
      log "nisshi: the other install ended without a binary; installing it here"
    fi

    command -v cargo >/dev/null 2>&1 || die "cargo not found on PATH (install Rust with rustup)"
    log "nisshi: building $NISSHI_VERSION from crates.io into $NISSHI_ROOT"
    log "        The first install takes ~20-35 minutes (2 cores, ~2 GB RAM); later runs reuse it."
    log "        Log: $NISSHI_INSTALL_LOG"
    # --locked: nisshi's own Cargo.lock, so every machine builds the same dependency versions;
    # --ignore-rust-version: don't refuse over the crate's declared rust-version (as measured).
    CARGO_TARGET_DIR="$NISSHI_BUILD_DIR" cargo install nisshi --version "$NISSHI_VERSION" \
        --locked --ignore-rust-version --root "$NISSHI_ROOT" 2>&1 | tee -a "$NISSHI_INSTALL_LOG" >&2 \
      || die "cargo install nisshi failed; see $NISSHI_INSTALL_LOG"
    [[ -x $NISSHI_BIN ]] || die "cargo install finished but $NISSHI_BIN is missing"
    log "nisshi $NISSHI_VERSION: installed ($NISSHI_BIN)"
  )
}

cmd_install() {
  install_apt_packages
  install_nisshi
}

# ---------------------------------------------------------------------------------------------
# ZooKeeper
# ---------------------------------------------------------------------------------------------

# Send a four-letter word and print the reply. Plain bash /dev/tcp because nc may be absent;
# `timeout` so a wedged server cannot hang the script.
zk_4lw() {
  # shellcheck disable=SC2016  # positional args of the inner shell
  timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" && printf %s "$2" >&3 && cat <&3' \
    "$HOST" "$ZK_PORT" "$1" 2>/dev/null || true
}

# Ready means `srvr` reports a Mode: `ruok` answers imok before the database is loaded.
zk_ready() { [[ $(zk_4lw srvr) == *Mode:* ]]; }

write_zk_config() {
  mkdir -p "$ZK_CONF_DIR" "$ZK_DATA_DIR" "$LOG_DIR"
  cat >"$ZK_CFG" <<EOF
# Generated by deploy/stack.sh; edits are overwritten on the next 'up'.
tickTime=2000
# Sessions may ask for 4-40 s; a crashed client keeps its ephemeral (lock) nodes that long.
minSessionTimeout=4000
maxSessionTimeout=40000
dataDir=$ZK_DATA_DIR
clientPort=$ZK_PORT
clientPortAddress=$HOST
# srvr/ruok/mntr/... for readiness checks and debugging.
4lw.commands.whitelist=*
# Otherwise an admin HTTP server takes port 8080 on all interfaces.
admin.enableServer=false
# Transaction log files are preallocated in 64 MB chunks by default; 4 MB is plenty here.
preAllocSize=4096
# Keep the data dir small: purge old snapshots/logs every hour.
autopurge.purgeInterval=1
autopurge.snapRetainCount=3
EOF
  # The conf dir is first on the classpath, so log4j finds this file.
  cat >"$ZK_CONF_DIR/log4j.properties" <<EOF
log4j.rootLogger=INFO, FILE
log4j.appender.FILE=org.apache.log4j.RollingFileAppender
log4j.appender.FILE.File=$ZK_LOG
log4j.appender.FILE.MaxFileSize=10MB
log4j.appender.FILE.MaxBackupIndex=3
log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
log4j.appender.FILE.layout.ConversionPattern=%d{ISO8601} %-5p [%t:%C{1}@%L] - %m%n
EOF
}

start_zookeeper() {
  local pid
  pid=$(find_pid zookeeper)
  if [[ -n $pid ]]; then
    check_same_port zookeeper "$ZK_PORT"
    if zk_ready; then
      log "zookeeper: already up (pid $pid, $HOST:$ZK_PORT)"
      return 0
    fi
    log "zookeeper: pid $pid is running but not serving yet; waiting"
  else
    command -v java >/dev/null 2>&1 || die "java not found; run '$0 install'"
    local jar
    for jar in "${ZK_JARS[@]}"; do
      [[ -f $jar ]] || die "$jar missing; run '$0 install' (apt package zookeeper)"
    done
    if port_in_use "$ZK_PORT"; then
      die "port $ZK_PORT is already taken by another process $(port_owner "$ZK_PORT");" \
          "stop it or set NW_ZK_PORT"
    fi
    write_zk_config
    log "zookeeper: starting on $HOST:$ZK_PORT (data $ZK_DATA_DIR)"
    mark_log "$ZK_LOG"; mark_log "$ZK_OUT"
    local cp="$ZK_CONF_DIR"
    for jar in "${ZK_JARS[@]}"; do cp+=":$jar"; done
    spawn zookeeper "$STACK_DIR/zookeeper" "$ZK_OUT" \
      java -Xmx256m -cp "$cp" org.apache.zookeeper.server.quorum.QuorumPeerMain "$ZK_CFG"
    echo "$ZK_PORT" >"$(port_file zookeeper)"
    pid=$(<"$(pid_file zookeeper)")
  fi

  local deadline=$((SECONDS + ZK_TIMEOUT))
  until zk_ready; do
    if ! pid_alive "$pid"; then
      show_tail "$ZK_OUT"; show_tail "$ZK_LOG"
      die "zookeeper exited during startup; see $ZK_LOG and $ZK_OUT"
    fi
    if ((SECONDS >= deadline)); then
      show_tail "$ZK_LOG"
      die "zookeeper (pid $pid) not ready after ${ZK_TIMEOUT}s ('srvr' has no Mode:); see $ZK_LOG"
    fi
    sleep 0.2
  done
  log "zookeeper: up (pid $pid, $HOST:$ZK_PORT)"
}

# ---------------------------------------------------------------------------------------------
# nisshi broker
# ---------------------------------------------------------------------------------------------

# nisshi loads a `.env` file from its working directory OR ANY PARENT (dotenv crate) and every
# broker flag also reads an env var (STORAGE_ENGINE, LISTENER_URL, SCHEMA_REGISTRY, ...). An
# empty `.env` in the data dir stops the search there, so a `.env` in the repo can't leak in.
prepare_kafka_dir() {
  mkdir -p "$KAFKA_DATA_DIR" "$LOG_DIR"
  [[ -f $KAFKA_DATA_DIR/.env ]] || : >"$KAFKA_DATA_DIR/.env"
}

# The broker answers a metadata request (within $1 seconds, default 5). Run from the data dir
# for the `.env` shield above.
kafka_ready() {
  (cd "$KAFKA_DATA_DIR" && timeout "${1:-5}" "$NISSHI_BIN" topic list --broker "$KAFKA_URL") \
    >/dev/null 2>&1
}

start_nisshi() {
  [[ -x $NISSHI_BIN ]] || die "$NISSHI_BIN missing; run '$0 install'"
  prepare_kafka_dir
  local pid
  pid=$(find_pid nisshi)
  if [[ -n $pid ]]; then
    check_same_port nisshi "$KAFKA_PORT"
    if kafka_ready 2; then
      log "nisshi: already up (pid $pid, $HOST:$KAFKA_PORT)"
      return 0
    fi
    log "nisshi: pid $pid is running but not serving yet; waiting"
  else
    # nisshi would also fail on a taken port, but only into its log; say it here, with the owner.
    if port_in_use "$KAFKA_PORT"; then
      die "port $KAFKA_PORT is already taken by another process $(port_owner "$KAFKA_PORT");" \
          "stop it (another broker?) or set NW_KAFKA_PORT"
    fi
    log "nisshi: starting on $HOST:$KAFKA_PORT (data $KAFKA_DATA_DIR)"
    mark_log "$KAFKA_LOG"
    # Every flag explicit: the defaults are memory storage (nothing persists) and a listener on
    # all interfaces ([::]), neither of which we want.
    spawn nisshi "$KAFKA_DATA_DIR" "$KAFKA_LOG" \
      "$NISSHI_BIN" broker \
        --listener-url "$KAFKA_URL" \
        --advertised-listener-url "$KAFKA_URL" \
        --storage-engine "$KAFKA_STORAGE"
    echo "$KAFKA_PORT" >"$(port_file nisshi)"
    pid=$(<"$(pid_file nisshi)")
  fi

  local deadline=$((SECONDS + KAFKA_TIMEOUT)) left
  # Each probe is bounded by the time left, so a wedged broker can't stretch the timeout.
  until left=$((deadline - SECONDS)); kafka_ready $((left < 1 ? 1 : left > 5 ? 5 : left)); do
    if ! pid_alive "$pid"; then
      show_tail "$KAFKA_LOG"
      die "nisshi exited during startup; see $KAFKA_LOG"
    fi
    if ((SECONDS >= deadline)); then
      show_tail "$KAFKA_LOG"
      die "nisshi (pid $pid) not ready after ${KAFKA_TIMEOUT}s ('nisshi topic list' fails); see $KAFKA_LOG"
    fi
    sleep 0.2
  done
  log "nisshi: up (pid $pid, $KAFKA_URL)"
}

# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------

# Serialise up/down/reset on one stack dir: two concurrent 'up's would otherwise both see the
# port free and start two servers. Held until the script exits; spawn() closes it in daemons.
STACK_LOCKED=0
lock_stack() {
  ((STACK_LOCKED)) && return 0
  mkdir -p "$RUN_DIR"
  exec 8>"$RUN_DIR/stack.lock"
  if ! flock -n 8; then
    log "another stack.sh is working on $STACK_DIR; waiting for it"
    flock 8
  fi
  STACK_LOCKED=1
}

cmd_up() {
  cmd_install
  lock_stack
  mkdir -p "$LOG_DIR"
  start_zookeeper
  start_nisshi
  log "stack is up. For clients: eval \"\$($0 env)\""
}

cmd_down() {
  lock_stack
  # Reverse order of 'up'.
  stop_service nisshi
  stop_service zookeeper
}

# One line per service. "up" = our process is alive AND answers; "unhealthy" = alive, not serving.
status_line() {
  local svc=$1 port=$2 data=$3 logf=$4 ready_fn=$5 pid state
  pid=$(find_pid "$svc")
  if [[ -z $pid ]]; then
    state=down
  elif $ready_fn; then
    state=up
  else
    state=unhealthy
  fi
  [[ -f $(port_file "$svc") ]] && port=$(<"$(port_file "$svc")")
  printf '%-10s %-9s pid=%-8s port=%-6s data=%s log=%s\n' \
    "$svc" "$state" "${pid:--}" "$port" "$data" "$logf"
  [[ $state == up ]]
}

kafka_ready_or_missing() { [[ -x $NISSHI_BIN ]] && kafka_ready; }

cmd_status() {
  local rc=0
  status_line zookeeper "$ZK_PORT" "$ZK_DATA_DIR" "$ZK_LOG" zk_ready || rc=3
  status_line nisshi "$KAFKA_PORT" "$KAFKA_DATA_DIR" "$KAFKA_LOG" kafka_ready_or_missing || rc=3
  return "$rc"
}

cmd_reset() {
  lock_stack
  cmd_down
  log "deleting data dirs $ZK_DATA_DIR and $KAFKA_DATA_DIR"
  rm -rf -- "$ZK_DATA_DIR" "$KAFKA_DATA_DIR"
}

cmd_env() {
  echo "export NW_ZK=$HOST:$ZK_PORT"
  echo "export NW_KAFKA=$HOST:$KAFKA_PORT"
}

usage() {
  sed -n '2,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

main() {
  case "${1:-}" in
    install) cmd_install ;;
    up)      cmd_up ;;
    down)    cmd_down ;;
    status)  cmd_status ;;
    reset)   cmd_reset ;;
    env)     cmd_env ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"

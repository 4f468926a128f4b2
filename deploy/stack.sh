#!/usr/bin/env bash
# Local dev stack for Northwest: ZooKeeper (standalone) + Apache Kafka (KRaft, 1 or 3 nodes)
# + PostgreSQL (the second engine's server; deploy/stack-postgres.sh).
#
#   deploy/stack.sh install            install missing apt packages and the pinned Kafka jars
#   deploy/stack.sh up [--brokers N]   install, then start ZooKeeper, N=1|3 Kafka nodes and
#                                      PostgreSQL and wait until they serve (also NW_KAFKA_BROKERS=N;
#                                      NW_STACK_POSTGRES=0: no PostgreSQL)
#   deploy/stack.sh down               stop everything that runs (TERM, then KILL after a grace)
#   deploy/stack.sh status             up/down, pid, port, data dir, log of each (exit 3 if one is down)
#   deploy/stack.sh reset              down, then delete all data dirs (ZooKeeper and Kafka)
#   deploy/stack.sh env                print `export NW_ZK=...` / `export NW_KAFKA=...` (and the
#                                      SASL_SSL listener: NW_KAFKA_SASL, NW_KAFKA_SASL_CONFIG)
#   deploy/stack.sh logs [LINES]       last lines (default 30) of each service's log
#   deploy/stack.sh kill-broker N      kill -9 Kafka node N (tests: lose a partition leader)
#   deploy/stack.sh start-broker N     start Kafka node N again (same data); wait until it serves
#   deploy/stack.sh pause-broker N     SIGSTOP Kafka node N (tests: a broker that hangs, not dies)
#   deploy/stack.sh resume-broker N    SIGCONT Kafka node N
#   deploy/stack.sh kill-zk            kill -9 ZooKeeper (tests and `northwest-chaos`)
#   deploy/stack.sh start-zk           start ZooKeeper again (same data); wait until it serves
#   deploy/stack.sh kill-pg            kill -9 PostgreSQL (the postmaster and its backends)
#   deploy/stack.sh start-pg           start PostgreSQL again (same data); wait until it serves
#   deploy/stack.sh psql [ARGS]        psql into the stack's database as its role
#   deploy/stack.sh kafka TOOL [ARGS]  run a Kafka CLI tool from the cached jars, e.g.
#                                      `kafka kafka-topics --bootstrap-server 127.0.0.1:9092 --list`
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
# Kafka node N (1..3) listens on KAFKA_PORT + 2(N-1) for clients and on the port above that for
# its controller: 9092/9093, 9094/9095, 9096/9097. Node 1 is the same in both cluster sizes.
readonly KAFKA_PORT="${NW_KAFKA_PORT:-9092}"
# Node N also has a SASL_SSL listener (SCRAM-SHA-512 over TLS) on KAFKA_SASL_PORT + N-1 (default
# KAFKA_PORT + 100, so a second stack on other ports gets its own), with a CA, broker certificate,
# user and client.properties generated per stack dir ($KAFKA_DIR/tls).
readonly KAFKA_SASL_PORT="${NW_KAFKA_SASL_PORT:-$((KAFKA_PORT + 100))}"
readonly STACK_DIR="${NW_STACK_DIR:-$REPO_ROOT/.northwest/stack}"
readonly ZK_TIMEOUT="${NW_ZK_TIMEOUT:-60}"        # seconds; ~5 s is normal with 166k znodes
readonly KAFKA_TIMEOUT="${NW_KAFKA_TIMEOUT:-90}"  # seconds; ~10 s is normal on 2 cores
readonly STOP_GRACE="${NW_STOP_GRACE:-20}"        # seconds between TERM and KILL
# NW_STACK_POSTGRES=0: ZooKeeper and Kafka only (a test's private stack that needs no database).
readonly WITH_POSTGRES="${NW_STACK_POSTGRES:-1}"

# chromium (headless) and prometheus (promtool) are for the test suite: the dashboard is
# tested in a real browser and the alert rules with promtool.
# libssl-dev: librdkafka is built with OpenSSL (SASL_SSL, SCRAM); openssl makes the stack's certificates.
readonly APT_PACKAGES=(zookeeper build-essential pkg-config libclang-dev cmake libssl-dev openssl
                       chromium prometheus postgresql curl)

# The Kafka jars are resolved once per machine from Maven Central (deploy/kafka/pom.xml pins the
# version) and shared by every checkout; Maven's own cache (~/.m2) keeps a second copy.
readonly KAFKA_POM="$REPO_ROOT/deploy/kafka/pom.xml"
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM" | head -n 1)
[[ -n $KAFKA_VERSION ]] || { echo "[stack] ERROR: no <kafka.version> in $KAFKA_POM" >&2; exit 1; }
readonly KAFKA_VERSION
readonly CACHE_DIR="${NORTHWEST_CACHE:-$HOME/.cache/northwest}"
readonly KAFKA_HOME="$CACHE_DIR/kafka-$KAFKA_VERSION"
readonly KAFKA_LIB="$KAFKA_HOME/lib"
# Written last, after every jar is in place: its absence means "not installed".
readonly KAFKA_STAMP="$KAFKA_HOME/pom.sha256"
readonly KAFKA_INSTALL_LOCK="$CACHE_DIR/kafka-install.lock"
readonly KAFKA_INSTALL_LOG="$CACHE_DIR/logs/kafka-install.log"
readonly KAFKA_HEAP=(-Xmx768m -Xms256m)

# Layout under $STACK_DIR: one data dir per service, all logs and pid files side by side.
readonly LOG_DIR="$STACK_DIR/logs"
readonly RUN_DIR="$STACK_DIR/run"
readonly ZK_CONF_DIR="$STACK_DIR/zookeeper/conf"
readonly ZK_DATA_DIR="$STACK_DIR/zookeeper/data"
readonly ZK_CFG="$ZK_CONF_DIR/zoo.cfg"
readonly ZK_LOG="$LOG_DIR/zookeeper.log"   # log4j output: the useful one
readonly ZK_OUT="$LOG_DIR/zookeeper.out"   # JVM stdout/stderr (crashes, bad options)
# Kafka: $KAFKA_DIR/cluster-<size>/{cluster.id,ports,node-N/{server.properties,log4j2.properties,data/}}
# The two cluster sizes keep separate data; only one runs at a time (same ports).
readonly KAFKA_DIR="$STACK_DIR/kafka"
readonly KAFKA_TOOLS_LOG4J="$KAFKA_DIR/tools-log4j2.properties"
readonly KAFKA_SIZE_FILE="$RUN_DIR/kafka.brokers"   # size of the cluster last started by 'up'
readonly KAFKA_MAX_NODES=3
readonly KAFKA_TLS_DIR="$KAFKA_DIR/tls"
readonly KAFKA_SASL_CONFIG="$KAFKA_TLS_DIR/client.properties"
readonly KAFKA_SCRAM_USER=northwest

# shellcheck source=deploy/stack-postgres.sh
source "$REPO_ROOT/deploy/stack-postgres.sh"
# NW_STACK_REGISTRY=0: no schema registry (Apicurio, for journal.framing = "confluent").
readonly WITH_REGISTRY="${NW_STACK_REGISTRY:-1}"
# shellcheck source=deploy/stack-registry.sh
source "$REPO_ROOT/deploy/stack-registry.sh"

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
# only our own instance has (its config path on the command line).
# ---------------------------------------------------------------------------------------------
pid_file()  { echo "$RUN_DIR/$1.pid"; }
port_file() { echo "$RUN_DIR/$1.port"; }

is_ours() {
  local svc=$1 pid=$2 cmd a=()
  pid_alive "$pid" || return 1
  # Same as $(proc_cmdline), without forking: this runs for every pid when scanning /proc.
  { mapfile -d '' a <"/proc/$pid/cmdline"; } 2>/dev/null || return 1
  cmd="${a[*]-} "
  case $svc in
    zookeeper) [[ $cmd == *QuorumPeerMain* && $cmd == *"$ZK_CFG"* ]] ;;
    # Our Kafka JVMs are told apart by their server.properties path (node N of either cluster
    # size lives at $KAFKA_DIR/cluster-<size>/node-N/server.properties).
    postgres)  [[ $cmd == *"/bin/postgres -D $PG_DATA "* ]] ;;
    registry)  [[ $cmd == *quarkus-run.jar* && $cmd == *"-Dnorthwest.stack=$STACK_DIR "* ]] ;;
    kafka-node[0-9])
               [[ $cmd == *" kafka.Kafka "* &&
                  $cmd == *" $KAFKA_DIR/cluster-"[0-9]"/node-${svc#kafka-node}/server.properties"* ]] ;;
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

# The java to run Kafka with: $JAVA_HOME's if set (as Kafka's own scripts do), else the PATH's.
java_bin() {
  if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then echo "$JAVA_HOME/bin/java"; else echo java; fi
}

# Major version of that java (17, 21, 25, ...), or nothing if there is none.
java_major() {
  local v
  v=$("$(java_bin)" -version 2>&1 | sed -n 's/.* version "\([0-9][0-9]*\).*/\1/p' | head -n 1) || true
  echo "$v"
}

# Stacks on one machine (a test's private one, a second chaos campaign) check and install one at
# a time: a package another run is installing reads as missing meanwhile, and a second apt-get
# would fail on apt's own lock.
install_apt_packages() {
  mkdir -p "$CACHE_DIR"
  exec 7>"$CACHE_DIR/apt.lock"
  flock 7
  install_missing_apt_packages
  exec 7>&-
}

install_missing_apt_packages() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    # Status, not just exit code: a removed package with leftover config still "exists".
    dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
  done
  # Kafka 4.x needs Java 17+ and Maven resolves it. Any JDK/Maven that works will do (the
  # machines have OpenJDK 17 from openjdk-17-*, not default-jdk-headless), so ask for the
  # Debian packages only when the command itself is missing or too old.
  local jv; jv=$(java_major)
  if [[ -z $jv ]] || ((jv < 17)); then
    dpkg -s default-jdk-headless 2>/dev/null | grep -q '^Status: install ok installed' &&
      die "java ${jv:-?} found, Kafka needs 17+; set JAVA_HOME to a newer JDK"
    missing+=(default-jdk-headless)
  fi
  command -v mvn >/dev/null 2>&1 || missing+=(maven)
  if ((${#missing[@]} == 0)); then
    log "apt packages: all present (${APT_PACKAGES[*]}; java $jv; mvn)"
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

pom_sha() { sha256sum "$KAFKA_POM" | cut -d ' ' -f 1; }

# Installed = the stamp exists and matches the pom (a pom edited without a version bump, e.g.
# another log4j binding, is picked up too).
kafka_installed() { [[ -f $KAFKA_STAMP && $(<"$KAFKA_STAMP") == "$(pom_sha)" ]]; }

install_kafka() {
  if kafka_installed; then
    log "kafka $KAFKA_VERSION: present ($KAFKA_LIB)"
    return 0
  fi
  mkdir -p "$CACHE_DIR/logs"
  # Subshell: the lock fd closes when it exits, so the daemons started later never inherit it.
  (
    exec 9>"$KAFKA_INSTALL_LOCK"
    if ! flock -n 9; then
      log "kafka: another stack.sh is installing it; waiting for the lock ($KAFKA_INSTALL_LOCK)"
      flock 9
    fi
    # Re-check under the lock: whoever held it may have just finished.
    if kafka_installed; then
      log "kafka $KAFKA_VERSION: present ($KAFKA_LIB)"
      exit 0
    fi
    command -v mvn >/dev/null 2>&1 || die "mvn not found; install Maven (apt-get install maven)"
    # Leftovers of an install that died half-way (we hold the lock, so nobody is using them).
    rm -rf -- "$CACHE_DIR/.kafka-$KAFKA_VERSION".tmp.* "$CACHE_DIR/.kafka-$KAFKA_VERSION".old.*

    local tmp
    tmp=$(mktemp -d "$CACHE_DIR/.kafka-$KAFKA_VERSION.tmp.XXXXXX")
    log "kafka $KAFKA_VERSION: resolving the jars from Maven Central into $KAFKA_LIB"
    log "        (~10-30 s the first time on a machine; log: $KAFKA_INSTALL_LOG)"
    # The pom is copied so that Maven writes nothing (target/) into the repo.
    cp "$KAFKA_POM" "$tmp/pom.xml"
    printf '=== %s: mvn dependency:copy-dependencies for kafka %s ===\n' \
      "$(date -u +%FT%TZ)" "$KAFKA_VERSION" >>"$KAFKA_INSTALL_LOG"
    # The project is a pom-only wrapper, so its dependencies include the kafka_2.13 artifact itself.
    if ! (cd "$tmp" && mvn -B -q -Dstyle.color=never dependency:copy-dependencies \
            -DincludeScope=runtime -DoutputDirectory="$tmp/lib") >>"$KAFKA_INSTALL_LOG" 2>&1; then
      rm -rf -- "$tmp"
      show_tail "$KAFKA_INSTALL_LOG"
      die "mvn could not resolve kafka $KAFKA_VERSION; see $KAFKA_INSTALL_LOG"
    fi
    local jar
    for jar in "kafka_2.13-$KAFKA_VERSION.jar" "kafka-tools-$KAFKA_VERSION.jar"; do
      [[ -f $tmp/lib/$jar ]] || { rm -rf -- "$tmp"; die "mvn finished but $jar is missing"; }
    done
    pom_sha >"$tmp/pom.sha256"
    # Swap in whole: a reader sees the old complete dir, no dir, or the new complete dir.
    if [[ -e $KAFKA_HOME ]]; then mv -- "$KAFKA_HOME" "$tmp.old"; fi
    mv -- "$tmp" "$KAFKA_HOME"
    rm -rf -- "$tmp.old"
    log "kafka $KAFKA_VERSION: installed ($(find "$KAFKA_LIB" -name '*.jar' | wc -l) jars in $KAFKA_LIB)"
  )
}

cmd_install() {
  install_apt_packages
  install_kafka
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
# Apache Kafka (KRaft; every node is broker and controller at once)
# ---------------------------------------------------------------------------------------------

kafka_port()      { echo $((KAFKA_PORT + 2 * ($1 - 1))); }        # client listener of node $1
kafka_ctl_port()  { echo $((KAFKA_PORT + 2 * ($1 - 1) + 1)); }    # controller listener of node $1
kafka_sasl_port() { echo $((KAFKA_SASL_PORT + $1 - 1)); }           # SASL_SSL listener of node $1
kafka_cluster_dir() { echo "$KAFKA_DIR/cluster-$1"; }
kafka_node_dir()  { echo "$KAFKA_DIR/cluster-$1/node-$2"; }
kafka_log()       { echo "$LOG_DIR/kafka-node$1.log"; }   # log4j2 output: the useful one
kafka_out()       { echo "$LOG_DIR/kafka-node$1.out"; }   # JVM stdout/stderr, format output
kafka_bootstrap() {
  local size=$1 n list=""
  for ((n = 1; n <= size; n++)); do list+="${list:+,}$HOST:$(kafka_port "$n")"; done
  echo "$list"
}

kafka_sasl_bootstrap() {
  local size=$1 n list=""
  for ((n = 1; n <= size; n++)); do list+="${list:+,}$HOST:$(kafka_sasl_port "$n")"; done
  echo "$list"
}

valid_size() { [[ $1 == 1 || $1 == 3 ]] || die "--brokers must be 1 or 3, not '$1'"; }

# Size of the cluster whose nodes are running now (from a live node's command line), or nothing.
running_size() {
  local n pid
  for ((n = 1; n <= KAFKA_MAX_NODES; n++)); do
    pid=$(find_pid "kafka-node$n")
    [[ -n $pid ]] || continue
    proc_cmdline "$pid" | sed -n 's:.*/kafka/cluster-\([0-9]\)/node-[0-9]/server\.properties.*:\1:p'
    return 0
  done
}

# The size the commands other than 'up' act on: the running cluster, else the last one 'up'
# started (all its nodes may have been killed), else the requested one.
active_size() {
  local s
  s=$(running_size)
  [[ -z $s && -s $KAFKA_SIZE_FILE ]] && s=$(<"$KAFKA_SIZE_FILE")
  echo "${s:-$REQUESTED_SIZE}"
}

# A Kafka Metadata request (v4, no topics) to port $1; prints the node ids of the brokers the
# answer lists (registered and unfenced), one per line. Plain bash /dev/tcp: no JVM start.
# Bounded by `timeout` ($2 s, default 3): a listener that accepts but doesn't serve yet hangs.
kafka_metadata_brokers() {
  local port=$1 t=${2:-3} out
  # Request: size 23 | api_key 3 (Metadata) | version 4 | correlation id "NW\0\1" |
  # client id "nw-stack" | topics: empty array | allow_auto_topic_creation false.
  # shellcheck disable=SC2016  # positional args of the inner shell
  out=$(timeout "$t" bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 1
      printf "\x00\x00\x00\x17\x00\x03\x00\x04\x4e\x57\x00\x01\x00\x08nw-stack\x00\x00\x00\x00\x00" >&3
      dd bs=65536 count=1 <&3 2>/dev/null | od -An -v -tu1' "$HOST" "$port" 2>/dev/null) || return 1
  local -a b
  read -r -a b <<<"$(echo $out)"   # unquoted on purpose: od's lines into one list
  # Response: size(4) | correlation id(4) | throttle_time_ms(4) | brokers: count(4), then per
  # broker node_id(4) host(2+len) port(4) rack(2+len, -1 = null).
  ((${#b[@]} >= 16)) || return 1
  [[ ${b[4]} == 78 && ${b[5]} == 87 && ${b[6]} == 0 && ${b[7]} == 1 ]] || return 1
  local count=$(((b[12] << 24) | (b[13] << 16) | (b[14] << 8) | b[15])) i=16 k len
  for ((k = 0; k < count; k++)); do
    ((i + 6 <= ${#b[@]})) || return 1
    echo $(((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]))
    len=$(((b[i + 4] << 8) | b[i + 5]))
    i=$((i + 6 + len + 4))
    ((i + 2 <= ${#b[@]})) || return 1
    len=$(((b[i] << 8) | b[i + 1]))
    ((len == 65535)) && len=0
    i=$((i + 2 + len))
  done
}

# Node $2 of a $1-node cluster serves: it answers a metadata request, and the brokers it lists
# include every node of the cluster ($3 = all, for 'up') or itself ($3 = self, start-broker).
kafka_node_ready() {
  local size=$1 n=$2 want=$3 t=${4:-3} ids m
  ids=$(kafka_metadata_brokers "$(kafka_port "$n")" "$t") || return 1
  if [[ $want == self ]]; then
    grep -qx "$n" <<<"$ids"
  else
    for ((m = 1; m <= size; m++)); do grep -qx "$m" <<<"$ids" || return 1; done
  fi
}

# Kafka node ids are 16 random bytes in url-safe base64 without padding (Uuid.randomUuid());
# like Kafka, avoid a leading '-' so the id can't be taken for a CLI option.
new_cluster_id() {
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [[ $id == -* || $id == AAAAAAAAAAAAAAAAAAAAA[AQ] ]] || break
  done
  echo "$id"
}

write_kafka_tools_log4j() {
  mkdir -p "$KAFKA_DIR"
  cat >"$KAFKA_TOOLS_LOG4J" <<EOT
# Generated by deploy/stack.sh: Kafka CLI tools log warnings to stderr.
status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOT
}

# The SASL_SSL listener's material, made once per stack dir: a CA, a broker certificate for
# 127.0.0.1/localhost signed by it (key encrypted, as Kafka's PEM keystore wants), the SCRAM
# password of $KAFKA_SCRAM_USER, and the client.properties clients use. Test-only secrets: made
# here, never committed.
write_kafka_tls() {
  local d=$KAFKA_TLS_DIR tmp f complete=1
  for f in ca.pem broker.keystore.pem key.password scram.password client.properties; do
    [[ -s $d/$f ]] || complete=0
  done
  ((complete)) && return 0
  command -v openssl >/dev/null || die "openssl not found; run '$0 install'"
  rm -rf "$KAFKA_DIR"/tls.??????   # left by an interrupted run: they hold a CA key
  tmp=$(mktemp -d "$KAFKA_DIR/tls.XXXXXX")
  (
    umask 077
    cd "$tmp"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=northwest dev stack CA" \
      -keyout ca.key -out ca.pem
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout broker.key -out broker.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >san.ext
    openssl x509 -req -days 3650 -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
      -extfile san.ext -out broker.crt
    openssl rand -hex 16 >key.password
    # PBE-SHA1-3DES: the scheme Java 17's keystore reader decrypts (it lacks PBES2).
    openssl pkcs8 -topk8 -v1 PBE-SHA1-3DES -in broker.key -passout file:key.password -out broker.key.enc
    cat broker.key.enc broker.crt >broker.keystore.pem
    rm -f broker.key broker.key.enc broker.csr san.ext ca.srl
    openssl rand -hex 16 >scram.password
    cat >client.properties <<EOT
# Generated by deploy/stack.sh: a client of the dev stack's SASL_SSL listener (NW_KAFKA_SASL).
security.protocol=SASL_SSL
sasl.mechanisms=SCRAM-SHA-512
sasl.username=$KAFKA_SCRAM_USER
sasl.password=$(<scram.password)
ssl.ca.location=$d/ca.pem
EOT
  ) >>"$LOG_DIR/kafka-tls.log" 2>&1 || { show_tail "$LOG_DIR/kafka-tls.log"; rm -rf "$tmp"
                                          die "making the SASL_SSL listener's certificates failed"; }
  rm -rf "$d"
  mv "$tmp" "$d"
  log "kafka: SASL_SSL material in $d (CA ca.pem, clients: client.properties)"
}

# The SCRAM user, once per cluster and password (the credential lives in the cluster's
# metadata; a stamp of the password's hash says it is there).
ensure_kafka_scram_user() {
  local size=$1 stamp want
  stamp="$(kafka_cluster_dir "$size")/scram.sha256"
  want=$(sha256sum "$KAFKA_TLS_DIR/scram.password" | cut -d ' ' -f 1)
  [[ -f $stamp && $(<"$stamp") == "$want" ]] && return 0
  log "kafka: creating SCRAM-SHA-512 user $KAFKA_SCRAM_USER"
  # On the command line (ConfigCommand's --add-config-file does not take SCRAM credentials):
  # visible in ps for the second it runs. A throw-away dev-stack password; production sets
  # its users with the operator's own tooling.
  "$(java_bin)" -Xmx256m -cp "$KAFKA_LIB/*" -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" \
    org.apache.kafka.tools.ConfigCommand --bootstrap-server "$(kafka_bootstrap "$size")" \
    --alter --entity-type users --entity-name "$KAFKA_SCRAM_USER" \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=$(<"$KAFKA_TLS_DIR/scram.password")]" \
    >>"$LOG_DIR/kafka-tls.log" 2>&1 </dev/null ||
    { show_tail "$LOG_DIR/kafka-tls.log"; die "creating the SCRAM user failed; see $LOG_DIR/kafka-tls.log"; }
  echo "$want" >"$stamp"
}

# server.properties and log4j2.properties of node $2 of a $1-node cluster, rewritten by every
# start (the data dir keeps the state; these only configure the process).
write_kafka_config() {
  local size=$1 n=$2 dir port ctl sasl rf isr voters="" m
  dir=$(kafka_node_dir "$size" "$n")
  port=$(kafka_port "$n")
  ctl=$(kafka_ctl_port "$n")
  sasl=$(kafka_sasl_port "$n")
  rf=$((size >= 3 ? 3 : 1))
  isr=$((size >= 3 ? 2 : 1))
  mkdir -p "$dir/data" "$LOG_DIR"
  local quorum
  if ((size == 1)); then
    # Dynamic quorum (KIP-853): the single voter is written at format time (--standalone).
    quorum="controller.quorum.bootstrap.servers=$HOST:$ctl"
  else
    # Static quorum: the voters are this list, every node formatted with the same cluster id.
    for ((m = 1; m <= size; m++)); do voters+="${voters:+,}$m@$HOST:$(kafka_ctl_port "$m")"; done
    quorum="controller.quorum.voters=$voters"
  fi
  # It holds the broker key's password: owner only.
  (umask 077; : >"$dir/server.properties")
  chmod 600 "$dir/server.properties"
  cat >"$dir/server.properties" <<EOT
# Generated by deploy/stack.sh; edits are overwritten on the next start.
# Node $n of a $size-node KRaft cluster: broker and controller in one process.
process.roles=broker,controller
node.id=$n
$quorum
listeners=PLAINTEXT://$HOST:$port,CONTROLLER://$HOST:$ctl,SASL_SSL://$HOST:$sasl
advertised.listeners=PLAINTEXT://$HOST:$port,CONTROLLER://$HOST:$ctl,SASL_SSL://$HOST:$sasl
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
# Clients that authenticate: SCRAM-SHA-512 over TLS (client.properties in $KAFKA_TLS_DIR).
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$KAFKA_TLS_DIR/broker.keystore.pem
listener.name.sasl_ssl.ssl.key.password=$(<"$KAFKA_TLS_DIR/key.password")
log.dirs=$dir/data
metadata.log.dir=$dir/data

# Replication: everything on every node in the 3-node cluster, acks=all survives one node down.
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
# Fewer internal partitions than the defaults (50): quicker to create and load on 2 cores.
offsets.topic.num.partitions=8
transaction.state.log.num.partitions=8

# Topics: produce to a missing topic creates it (8 partitions), as with the previous broker.
auto.create.topics.enable=true
num.partitions=8
# Room for the node's largest journal record (deploy/n1.toml: max_message_bytes = 10 MiB, a
# transaction of 8 x 1 MiB values) even on auto-created topics; replicas must fetch it too.
message.max.bytes=16777216
replica.fetch.max.bytes=16777216
# Consumer groups: no 3 s wait for more members before the first assignment (tests).
group.initial.rebalance.delay.ms=0
# Log cleaner: look for compactable logs every second (tests set a small segment.ms to force it).
log.cleaner.backoff.ms=1000
log.cleaner.dedupe.buffer.size=33554432
# A killed node is fenced (its partitions' leaders move) after 6 s instead of 9 s.
broker.session.timeout.ms=6000
broker.heartbeat.interval.ms=1000
# 2 cores shared by up to 3 nodes, ZooKeeper and the tests.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
EOT
  local logf; logf=$(kafka_log "$n")
  cat >"$dir/log4j2.properties" <<EOT
# Generated by deploy/stack.sh: the broker logs to $logf (rolled at 20 MB, 3 kept).
status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = $logf
appender.file.filePattern = $logf.%i
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
# One line per request at DEBUG; keep it quiet.
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOT
}

kafka_java() {
  local jv; jv=$(java_major)
  [[ -n $jv ]] || die "java not found; run '$0 install'"
  ((jv >= 17)) || die "java $jv found, Kafka $KAFKA_VERSION needs 17+; set JAVA_HOME"
  kafka_installed || die "kafka $KAFKA_VERSION is not installed ($KAFKA_LIB); run '$0 install'"
}

# The data of a cluster is tied to its ports (the single node's voter endpoint is stored at
# format time): refuse to reuse it with other ports rather than start a broken node.
check_cluster_ports() {
  local size=$1 f have
  f="$(kafka_cluster_dir "$size")/ports"
  [[ -f $f ]] || return 0
  have=$(<"$f")
  [[ $have == "$KAFKA_PORT" ]] ||
    die "the $size-node Kafka data in $(kafka_cluster_dir "$size") was made for NW_KAFKA_PORT=$have," \
        "not $KAFKA_PORT; use that port, or '$0 reset' (deletes all data)"
}

# Format the data dirs of the nodes of a $1-node cluster that are not formatted yet (in
# parallel: each is a JVM start).
format_kafka() {
  local size=$1 cdir id n dir pids=() todo=()
  cdir=$(kafka_cluster_dir "$size")
  for ((n = 1; n <= size; n++)); do
    [[ -f $(kafka_node_dir "$size" "$n")/data/meta.properties ]] || todo+=("$n")
  done
  ((${#todo[@]} > 0)) || return 0
  if [[ ! -s $cdir/cluster.id ]]; then
    new_cluster_id >"$cdir/cluster.id.tmp"
    mv "$cdir/cluster.id.tmp" "$cdir/cluster.id"
  fi
  echo "$KAFKA_PORT" >"$cdir/ports"
  id=$(<"$cdir/cluster.id")
  local standalone=()
  ((size == 1)) && standalone=(--standalone)
  for n in "${todo[@]}"; do
    dir=$(kafka_node_dir "$size" "$n")
    log "kafka node $n: formatting $dir/data (cluster id $id)"
    mark_log "$(kafka_out "$n")"
    "$(java_bin)" -Xmx256m -cp "$KAFKA_LIB/*" -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" \
      kafka.tools.StorageTool format "${standalone[@]}" -t "$id" -c "$dir/server.properties" \
      >>"$(kafka_out "$n")" 2>&1 </dev/null &
    pids+=($!)
  done
  local i rc=0
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      show_tail "$(kafka_out "${todo[$i]}")"
      rc=1
    fi
  done
  ((rc == 0)) || die "formatting the Kafka data dirs failed; see the output above"
}

# Spawn node $2 of a $1-node cluster unless it runs already; does not wait.
spawn_kafka_node() {
  local size=$1 n=$2 svc="kafka-node$2" pid dir port ctl p
  pid=$(find_pid "$svc")
  if [[ -n $pid ]]; then
    check_same_port "$svc" "$(kafka_port "$n")"
    log "$svc: running (pid $pid, $HOST:$(kafka_port "$n"))"
    return 0
  fi
  dir=$(kafka_node_dir "$size" "$n")
  port=$(kafka_port "$n")
  ctl=$(kafka_ctl_port "$n")
  for p in "$port" "$ctl" "$(kafka_sasl_port "$n")"; do
    if port_in_use "$p"; then
      die "port $p (Kafka node $n) is already taken by another process $(port_owner "$p");" \
          "stop it (another broker?) or set NW_KAFKA_PORT"
    fi
  done
  log "$svc: starting on $HOST:$port, controller $HOST:$ctl (data $dir/data)"
  mark_log "$(kafka_log "$n")"; mark_log "$(kafka_out "$n")"
  spawn "$svc" "$dir" "$(kafka_out "$n")" \
    "$(java_bin)" "${KAFKA_HEAP[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
      -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$dir/log4j2.properties" \
      -cp "$KAFKA_LIB/*" kafka.Kafka "$dir/server.properties"
  echo "$port" >"$(port_file "$svc")"
}

# Wait until node $2 of a $1-node cluster serves ($3 = all | self, see kafka_node_ready).
wait_kafka_node() {
  local size=$1 n=$2 want=$3 svc="kafka-node$2" pid left
  pid=$(find_pid "$svc")
  [[ -n $pid ]] || { show_tail "$(kafka_out "$n")"; show_tail "$(kafka_log "$n")"
                     die "$svc is not running (exited during startup?); see $(kafka_log "$n")"; }
  local deadline=$((SECONDS + KAFKA_TIMEOUT))
  # Each probe is bounded by the time left, so a wedged broker can't stretch the timeout.
  until left=$((deadline - SECONDS)); kafka_node_ready "$size" "$n" "$want" $((left < 1 ? 1 : left > 3 ? 3 : left)); do
    if ! pid_alive "$pid"; then
      show_tail "$(kafka_out "$n")"; show_tail "$(kafka_log "$n")"
      die "$svc exited during startup; see $(kafka_log "$n") and $(kafka_out "$n")"
    fi
    if ((SECONDS >= deadline)); then
      show_tail "$(kafka_log "$n")"
      die "$svc (pid $pid) not ready after ${KAFKA_TIMEOUT}s (its metadata does not list" \
          "$([[ $want == self ]] && echo "itself" || echo "all $size nodes")); see $(kafka_log "$n")"
    fi
    sleep 0.3
  done
  log "$svc: up (pid $pid, $HOST:$(kafka_port "$n"))"
}

start_kafka() {
  local size=$1 running n
  kafka_java
  running=$(running_size)
  if [[ -n $running && $running != "$size" ]]; then
    die "a $running-node Kafka cluster is running, but $size node(s) were requested;" \
        "run '$0 down' first (or pass --brokers $running)"
  fi
  check_cluster_ports "$size"
  write_kafka_tools_log4j
  mkdir -p "$KAFKA_DIR" "$LOG_DIR"
  write_kafka_tls
  for ((n = 1; n <= size; n++)); do write_kafka_config "$size" "$n"; done
  format_kafka "$size"
  echo "$size" >"$KAFKA_SIZE_FILE"
  # All nodes first: in the 3-node cluster none serves before a quorum of controllers is up.
  for ((n = 1; n <= size; n++)); do spawn_kafka_node "$size" "$n"; done
  for ((n = 1; n <= size; n++)); do wait_kafka_node "$size" "$n" all; done
  ensure_kafka_scram_user "$size"
}

# TERM every node at once (a node that shuts down alone in a 3-node cluster waits for the
# controllers; all together they don't), wait up to $STOP_GRACE seconds, then KILL.
stop_kafka() {
  local n pid svcs=() pids=() i
  for ((n = 1; n <= KAFKA_MAX_NODES; n++)); do
    pid=$(find_pid "kafka-node$n")
    if [[ -n $pid ]]; then
      svcs+=("kafka-node$n"); pids+=("$pid")
      log "kafka-node$n: stopping pid $pid"
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  if ((${#pids[@]} == 0)); then
    log "kafka: already down"
  else
    for ((i = 0; i < STOP_GRACE * 10; i++)); do
      local alive=0
      for pid in "${pids[@]}"; do pid_alive "$pid" && alive=1; done
      ((alive)) || break
      sleep 0.1
    done
    for i in "${!pids[@]}"; do
      pid=${pids[$i]}
      if pid_alive "$pid"; then
        log "${svcs[$i]}: still alive after ${STOP_GRACE}s, sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
        local j
        for ((j = 0; j < 50; j++)); do pid_alive "$pid" || break; sleep 0.1; done
        pid_alive "$pid" && die "${svcs[$i]}: pid $pid survived KILL"
      fi
      log "${svcs[$i]}: stopped"
    done
  fi
  for ((n = 1; n <= KAFKA_MAX_NODES; n++)); do
    rm -f "$(pid_file "kafka-node$n")" "$(port_file "kafka-node$n")"
  done
  rm -f "$KAFKA_SIZE_FILE"
}

# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------

# Serialise up/down/reset/kill/start on one stack dir: two concurrent 'up's would otherwise both
# see the port free and start two servers. Held until the script exits; spawn() closes it in
# daemons.
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
  valid_size "$REQUESTED_SIZE"
  cmd_install
  lock_stack
  mkdir -p "$LOG_DIR"
  start_zookeeper
  start_kafka "$REQUESTED_SIZE"
  if ((WITH_POSTGRES)); then start_postgres; fi
  if ((WITH_REGISTRY)); then start_registry; fi
  log "stack is up ($REQUESTED_SIZE Kafka node(s)). For clients: eval \"\$($0 env)\""
}

cmd_down() {
  lock_stack
  # Reverse order of 'up'.
  stop_service registry
  stop_postgres
  stop_kafka
  stop_service zookeeper
}

# One line per service. "up" = our process is alive AND answers; "unhealthy" = alive, not serving.
status_line() {
  local name=$1 svc=$2 port=$3 data=$4 logf=$5 pid state
  shift 5
  pid=$(find_pid "$svc")
  if [[ -z $pid ]]; then
    state=down
  elif "$@"; then
    state=up
  else
    state=unhealthy
  fi
  [[ -n $pid && -f $(port_file "$svc") ]] && port=$(<"$(port_file "$svc")")
  printf '%-11s %-9s pid=%-8s port=%-6s data=%s log=%s\n' \
    "$name" "$state" "${pid:--}" "$port" "$data" "$logf"
  [[ $state == up ]]
}

cmd_status() {
  local rc=0 size n
  status_line zookeeper zookeeper "$ZK_PORT" "$ZK_DATA_DIR" "$ZK_LOG" zk_ready || rc=3
  size=$(active_size)
  for ((n = 1; n <= size; n++)); do
    status_line "kafka-node$n" "kafka-node$n" "$(kafka_port "$n")" \
      "$(kafka_node_dir "$size" "$n")/data" "$(kafka_log "$n")" \
      kafka_node_ready "$size" "$n" self 2 || rc=3
  done
  if ((WITH_POSTGRES)); then
    status_line postgres postgres "$PG_PORT" "$PG_DATA" "$PG_LOG" pg_ready || rc=3
  fi
  if ((WITH_REGISTRY)); then
    status_line registry registry "$REGISTRY_PORT" "(in memory)" "$REGISTRY_LOG" registry_ready || rc=3
  fi
  return "$rc"
}

cmd_reset() {
  lock_stack
  cmd_down
  log "deleting data dirs $ZK_DATA_DIR, $KAFKA_DIR and $PG_HOME"
  rm -rf -- "$ZK_DATA_DIR" "$KAFKA_DIR" "$PG_DIR" "$PG_HOME"
}

cmd_env() {
  echo "export NW_ZK=$HOST:$ZK_PORT"
  echo "export NW_KAFKA=$(kafka_bootstrap "$(active_size)")"
  echo "export NW_KAFKA_SASL=$(kafka_sasl_bootstrap "$(active_size)")"
  echo "export NW_KAFKA_SASL_CONFIG=$KAFKA_SASL_CONFIG"
  echo "export NW_PG=$HOST:$PG_PORT"
  echo "export NW_PG_PASSWORD_FILE=$PG_PASSWORD_FILE"
  echo "export NW_SCHEMA_REGISTRY=$REGISTRY_URL"
}

cmd_logs() {
  local lines=${1:-30} size n f
  [[ $lines =~ ^[0-9]+$ ]] || die "logs: LINES must be a number, not '$lines'"
  size=$(active_size)
  local files=("$ZK_LOG" "$PG_LOG" "$REGISTRY_LOG")
  for ((n = 1; n <= size; n++)); do files+=("$(kafka_log "$n")"); done
  for f in "${files[@]}"; do
    printf '==> %s <==\n' "$f"
    if [[ -f $f ]]; then tail -n "$lines" "$f"; else echo "(no log yet)"; fi
  done
}

node_arg() {
  local n=${1:-} size=$2
  [[ $n =~ ^[0-9]+$ ]] && ((n >= 1 && n <= size)) ||
    die "need a Kafka node number 1..$size (the cluster has $size node(s)), not '${n}'"
  echo "$n"
}

# kill -9 of one service (tests and `northwest-chaos` inject faults with it).
kill9_service() {
  local name=$1 pid
  pid=$(find_pid "$name")
  if [[ -z $pid ]]; then
    log "$name: already down"
    return 0
  fi
  log "$name: kill -9 pid $pid"
  kill -KILL "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 50; i++)); do pid_alive "$pid" || break; sleep 0.1; done
  pid_alive "$pid" && die "$name: pid $pid survived KILL"
  rm -f "$(pid_file "$name")" "$(port_file "$name")"
  log "$name: killed"
}

cmd_kill_broker() {
  lock_stack
  local size n
  size=$(active_size)
  n=$(node_arg "${1:-}" "$size")
  kill9_service "kafka-node$n"
}

# SIGSTOP / SIGCONT of one Kafka node: connections stay open and hang.
signal_broker() {
  local sig=$1 size n pid
  lock_stack
  size=$(active_size)
  n=$(node_arg "${2:-}" "$size")
  pid=$(find_pid "kafka-node$n")
  [[ -n $pid ]] || die "kafka-node$n: not running"
  log "kafka-node$n: kill -$sig pid $pid"
  kill "-$sig" "$pid"
}

cmd_start_broker() {
  lock_stack
  local size n
  size=$(active_size)
  n=$(node_arg "${1:-}" "$size")
  kafka_java
  check_cluster_ports "$size"
  [[ -f $(kafka_node_dir "$size" "$n")/data/meta.properties ]] ||
    die "Kafka node $n of the $size-node cluster has no data yet; run '$0 up --brokers $size'"
  write_kafka_tools_log4j
  write_kafka_tls
  write_kafka_config "$size" "$n"
  spawn_kafka_node "$size" "$n"
  wait_kafka_node "$size" "$n" self
}

# ZooKeeper killed with -9 and started again on the same data (sessions past
# their timeout expire meanwhile).
cmd_kill_zk() {
  lock_stack
  kill9_service zookeeper
}

cmd_start_zk() {
  lock_stack
  start_zookeeper
}

# Kafka's CLI tools, by the name of their script in the Kafka distribution (or a class name).
kafka_tool_class() {
  case $1 in
    kafka-topics)              echo org.apache.kafka.tools.TopicCommand ;;
    kafka-console-producer)    echo org.apache.kafka.tools.ConsoleProducer ;;
    kafka-console-consumer)    echo org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    kafka-consumer-groups)     echo org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    kafka-configs)             echo org.apache.kafka.tools.ConfigCommand ;;
    kafka-get-offsets)         echo org.apache.kafka.tools.GetOffsetShell ;;
    kafka-metadata-quorum)     echo org.apache.kafka.tools.MetadataQuorumCommand ;;
    kafka-cluster)             echo org.apache.kafka.tools.ClusterTool ;;
    kafka-leader-election)     echo org.apache.kafka.tools.LeaderElectionCommand ;;
    kafka-delete-records)      echo org.apache.kafka.tools.DeleteRecordsCommand ;;
    kafka-broker-api-versions) echo org.apache.kafka.tools.BrokerApiVersionsCommand ;;
    kafka-producer-perf-test)  echo org.apache.kafka.tools.ProducerPerformance ;;
    kafka-consumer-perf-test)  echo org.apache.kafka.tools.ConsumerPerformance ;;
    kafka-storage)             echo kafka.tools.StorageTool ;;
    *.*)                       echo "$1" ;;
    *) die "unknown Kafka tool '$1' (kafka-topics, kafka-console-producer," \
           "kafka-console-consumer, kafka-consumer-groups, kafka-configs, kafka-get-offsets," \
           "kafka-metadata-quorum, ..., or a class name)" ;;
  esac
}

cmd_kafka() {
  (($# >= 1)) || die "usage: $0 kafka TOOL [ARGS...], e.g. kafka-topics --bootstrap-server $HOST:$KAFKA_PORT --list"
  local class
  class=$(kafka_tool_class "${1%.sh}")
  shift
  kafka_java
  [[ -f $KAFKA_TOOLS_LOG4J ]] || write_kafka_tools_log4j
  exec "$(java_bin)" -Xmx512m -cp "$KAFKA_LIB/*" -Dlog4j2.configurationFile="$KAFKA_TOOLS_LOG4J" \
    "$class" "$@"
}

usage() {
  sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

main() {
  local cmd=${1:-}
  (($#)) && shift
  REQUESTED_SIZE=${NW_KAFKA_BROKERS:-1}
  # Options before the command's own arguments (not for 'kafka', whose args are the tool's).
  local args=()
  if [[ $cmd != kafka ]]; then
    while (($#)); do
      case $1 in
        --brokers)   (($# >= 2)) || die "--brokers needs a value"; REQUESTED_SIZE=$2; shift 2 ;;
        --brokers=*) REQUESTED_SIZE=${1#--brokers=}; shift ;;
        *)           args+=("$1"); shift ;;
      esac
    done
  else
    args=("$@")
  fi
  valid_size "$REQUESTED_SIZE"
  case "$cmd" in
    install)      cmd_install ;;
    up)           cmd_up ;;
    down)         cmd_down ;;
    status)       cmd_status ;;
    reset)        cmd_reset ;;
    env)          cmd_env ;;
    logs)         cmd_logs "${args[@]}" ;;
    kill-broker)  cmd_kill_broker "${args[@]}" ;;
    pause-broker) signal_broker STOP "${args[@]}" ;;
    resume-broker) signal_broker CONT "${args[@]}" ;;
    start-broker) cmd_start_broker "${args[@]}" ;;
    kill-zk)      cmd_kill_zk ;;
    start-zk)     cmd_start_zk ;;
    kill-pg)      lock_stack; kill_postgres ;;
    start-pg)     lock_stack; mkdir -p "$LOG_DIR"; start_postgres ;;
    psql)         pg_psql -d "$PG_DB" "${args[@]}" ;;
    kafka)        cmd_kafka "${args[@]}" ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"

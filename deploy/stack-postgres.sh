# PostgreSQL for the dev stack: a cluster of the stack's own (own data directory, port and
# socket directory on loopback; never the system cluster), sourced by deploy/stack.sh.
#
# Layout: $PG_DIR/password (the northwest role's password, 0600, read by nodes through
# `store.postgres.password_file`); $PG_HOME/data (the cluster, owned by the user postgres runs
# as) and $PG_HOME/run (its Unix socket). PG_HOME is $PG_DIR, unless the stack runs as root in a
# directory the postgres user cannot enter (a checkout under /root, a 0700 temporary
# directory): then it is a directory of that user's own, named after the stack dir. Clients
# connect over TCP to 127.0.0.1:$PG_PORT as role `northwest`, database `northwest`, with
# SCRAM-SHA-256.

readonly PG_PORT="${NW_PG_PORT:-5433}"
readonly PG_DIR="$STACK_DIR/postgres"
readonly PG_PASSWORD_FILE="$PG_DIR/password"

# Sets PG_HOME, PG_DATA and PG_SOCK (again after 'install' may have created the postgres user).
pg_paths() {
  PG_HOME=$PG_DIR
  if ((EUID == 0)) && id postgres >/dev/null 2>&1; then
    local probe=$PG_DIR
    while [[ ! -e $probe ]]; do probe=$(dirname "$probe"); done
    if ! setpriv --reuid=postgres --regid=postgres --init-groups -- test -x "$probe" 2>/dev/null; then
      local home; home=$(getent passwd postgres | cut -d: -f6)
      PG_HOME="${home:-/var/lib/postgresql}/northwest-stacks/$(printf %s "$STACK_DIR" | sha256sum | cut -c1-12)"
    fi
  fi
  PG_DATA="$PG_HOME/data"
  PG_SOCK="$PG_HOME/run"
}
pg_paths
readonly PG_LOG="$LOG_DIR/postgres.log"
readonly PG_TIMEOUT="${NW_PG_TIMEOUT:-60}"
readonly PG_ROLE=northwest
readonly PG_DB=northwest

# The server's binaries (Debian installs each major under /usr/lib/postgresql/<major>): the
# major that made the data directory, else the newest installed.
pg_bin() {
  local d major
  if [[ -r $PG_DATA/PG_VERSION ]]; then
    major=$(<"$PG_DATA/PG_VERSION")
    d=/usr/lib/postgresql/$major/bin
    [[ -x $d/postgres ]] || die "$PG_DATA was made by PostgreSQL $major, which is not installed" \
                               "(apt package postgresql-$major), or run '$0 reset'"
    echo "$d"
    return 0
  fi
  d=$(find /usr/lib/postgresql -maxdepth 3 -path '*/bin/postgres' 2>/dev/null | sort -V | tail -n 1)
  [[ -n $d ]] || die "no PostgreSQL server under /usr/lib/postgresql; run '$0 install' (apt package postgresql)"
  dirname "$d"
}

# PostgreSQL refuses to run as root: as root the cluster belongs to the package's `postgres`
# user (setpriv execs, so the pid the stack records is the postmaster's own).
pg_as_owner() {
  if ((EUID == 0)); then
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
  else
    "$@"
  fi
}

pg_ready() {
  pg_as_owner "$(pg_bin)/pg_isready" -q -h "$HOST" -p "$PG_PORT" -d postgres -U "$PG_ROLE" \
    -t 2 2>/dev/null
}

# psql over the cluster's own socket (local connections are trusted: the socket directory is
# readable only by the cluster's owner).
pg_psql() {
  pg_as_owner "$(pg_bin)/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" \
    -U "$PG_ROLE" "$@"
}

init_postgres() {
  [[ -f $PG_DATA/PG_VERSION ]] && return 0
  log "postgres: initdb $PG_DATA"
  mkdir -p "$PG_DIR" "$PG_HOME" "$PG_SOCK" "$LOG_DIR"
  if ((EUID == 0)); then
    [[ $PG_HOME == "$PG_DIR" ]] || chown postgres:postgres "$PG_HOME"
    # As root the cluster belongs to `postgres`, which must reach its directory from /.
    setpriv --reuid=postgres --regid=postgres --init-groups -- test -x "$PG_HOME" ||
      die "the postgres user cannot enter $PG_HOME; set NW_STACK_DIR to a directory it can enter"
  fi
  if [[ ! -s $PG_PASSWORD_FILE ]]; then
    (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$PG_PASSWORD_FILE")
  fi
  rm -rf -- "$PG_DATA"
  mkdir -p "$PG_DATA"
  local pwfile="$PG_HOME/.initdb-pw"
  (umask 077; cp "$PG_PASSWORD_FILE" "$pwfile")
  if ((EUID == 0)); then chown postgres:postgres "$PG_DATA" "$PG_SOCK" "$pwfile"; fi
  chmod 700 "$PG_DATA" "$PG_SOCK"
  pg_as_owner "$(pg_bin)/initdb" -D "$PG_DATA" -U "$PG_ROLE" --pwfile="$pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >>"$PG_LOG" 2>&1 ||
    { rm -f "$pwfile"; show_tail "$PG_LOG"; die "postgres: initdb failed; see $PG_LOG"; }
  rm -f "$pwfile"
  cat >>"$PG_DATA/postgresql.conf" <<EOF
# Added by deploy/stack.sh.
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 300
shared_buffers = 256MB
# Durable commits (the default) share WAL flushes when they arrive together.
commit_delay = 0
logging_collector = off
log_min_messages = warning
EOF
}

start_postgres() {
  local pid
  pid=$(find_pid postgres)
  if [[ -n $pid ]]; then
    check_same_port postgres "$PG_PORT"
    if pg_ready; then
      log "postgres: already up (pid $pid, $HOST:$PG_PORT)"
      return 0
    fi
    log "postgres: pid $pid is running but not serving yet; waiting"
  else
    if port_in_use "$PG_PORT"; then
      die "port $PG_PORT is already taken by another process $(port_owner "$PG_PORT");" \
          "stop it or set NW_PG_PORT"
    fi
    pg_paths
    init_postgres
    # A kill -9 leaves postmaster.pid behind; postgres itself checks whether that pid lives.
    log "postgres: starting on $HOST:$PG_PORT (data $PG_DATA)"
    mark_log "$PG_LOG"
    local as_owner=()
    ((EUID == 0)) && as_owner=(setpriv --reuid=postgres --regid=postgres --init-groups --)
    spawn postgres "$PG_HOME" "$PG_LOG" \
      "${as_owner[@]}" "$(pg_bin)/postgres" -D "$PG_DATA" -p "$PG_PORT"
    echo "$PG_PORT" >"$(port_file postgres)"
    pid=$(<"$(pid_file postgres)")
  fi
  local deadline=$((SECONDS + PG_TIMEOUT))
  until pg_ready; do
    if ! pid_alive "$pid"; then
      show_tail "$PG_LOG"
      die "postgres exited during startup; see $PG_LOG"
    fi
    if ((SECONDS >= deadline)); then
      show_tail "$PG_LOG"
      die "postgres (pid $pid) not ready after ${PG_TIMEOUT}s; see $PG_LOG"
    fi
    sleep 0.2
  done
  if [[ -z $(pg_psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'") ]]; then
    pg_psql -d postgres -c "CREATE DATABASE $PG_DB" || die "postgres: cannot create database $PG_DB"
  fi
  log "postgres: up (pid $(find_pid postgres), $HOST:$PG_PORT, database $PG_DB, role $PG_ROLE)"
}

# Fast shutdown (SIGINT: abort transactions, checkpoint, exit) so 'down' never leaves a
# recovery to the next start; kill-pg is the crash.
stop_postgres() {
  local pid i
  pid=$(find_pid postgres)
  if [[ -z $pid ]]; then
    log "postgres: already down"
  else
    log "postgres: stopping pid $pid"
    kill -INT "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_GRACE * 10; i++)); do pid_alive "$pid" || break; sleep 0.1; done
    if pid_alive "$pid"; then
      log "postgres: still alive after ${STOP_GRACE}s, sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "postgres: stopped"
  fi
  rm -f "$(pid_file postgres)" "$(port_file postgres)"
}

# kill -9 of the postmaster alone leaves its backends running and holding the port; a crash of
# the server kills them all. The postmaster is stopped first, so that it forks nothing new
# between the two kills (a backend left attached to shared memory blocks the next start).
kill_postgres() {
  local pid
  pid=$(find_pid postgres)
  if [[ -z $pid ]]; then
    log "postgres: already down"
    return 0
  fi
  log "postgres: kill -9 pid $pid and its backends"
  kill -STOP "$pid" 2>/dev/null || true
  pkill -KILL -P "$pid" 2>/dev/null || true
  kill -KILL "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 50; i++)); do pid_alive "$pid" || break; sleep 0.1; done
  for ((i = 0; i < 50; i++)); do port_in_use "$PG_PORT" || break; sleep 0.1; done
  rm -f "$(pid_file postgres)" "$(port_file postgres)"
  log "postgres: killed"
}

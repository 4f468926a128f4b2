# Apicurio Registry for the dev stack (a Confluent Schema Registry API at
# http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7), sourced by deploy/stack.sh. The nodes'
# `journal.framing = "confluent"` registers its schemas there. Maven Central serves the built
# app (io.apicurio:apicurio-registry-app:<v>:tar.gz:all, ~160 MB); it runs on Java 21 or later
# (this machine's /usr/lib/jvm/temurin-25-jdk-amd64 or NW_REGISTRY_JAVA) with in-memory storage
# (H2): its schemas do not survive a restart, and none of the nodes' data depends on them.

readonly REGISTRY_VERSION="${NW_REGISTRY_VERSION:-3.3.3}"
readonly REGISTRY_PORT="${NW_REGISTRY_PORT:-8085}"
readonly REGISTRY_MGMT_PORT="${NW_REGISTRY_MGMT_PORT:-$((REGISTRY_PORT + 1000))}"
readonly REGISTRY_HOME="$CACHE_DIR/apicurio-registry-$REGISTRY_VERSION"
readonly REGISTRY_LOG="$LOG_DIR/registry.log"
readonly REGISTRY_TIMEOUT="${NW_REGISTRY_TIMEOUT:-90}"
readonly REGISTRY_URL="http://$HOST:$REGISTRY_PORT/apis/ccompat/v7"

# A java of major version 21 or later: NW_REGISTRY_JAVA, the stack's java, then the JDKs under
# /usr/lib/jvm (newest first). Nothing when there is none.
registry_java() {
  local j v
  for j in "${NW_REGISTRY_JAVA:-}" "$(java_bin)" $(ls -d /usr/lib/jvm/*/bin/java 2>/dev/null | sort -rV); do
    [[ -n $j ]] && command -v "$j" >/dev/null 2>&1 || continue
    v=$("$j" -version 2>&1 | sed -n 's/.* version "\([0-9][0-9]*\).*/\1/p' | head -n 1)
    if [[ -n $v ]] && ((v >= 21)); then echo "$j"; return 0; fi
  done
}

install_registry() {
  [[ -f $REGISTRY_HOME/quarkus-run.jar ]] && return 0
  command -v mvn >/dev/null 2>&1 || die "mvn not found; install Maven (apt-get install maven)"
  mkdir -p "$CACHE_DIR/logs"
  (
    exec 9>"$CACHE_DIR/registry-install.lock"
    flock 9
    [[ -f $REGISTRY_HOME/quarkus-run.jar ]] && exit 0
    local tmp
    tmp=$(mktemp -d "$CACHE_DIR/.registry.tmp.XXXXXX")
    log "registry: fetching Apicurio Registry $REGISTRY_VERSION from Maven Central (~160 MB)"
    if ! mvn -B -q -Dstyle.color=never dependency:copy \
        -Dartifact="io.apicurio:apicurio-registry-app:$REGISTRY_VERSION:tar.gz:all" \
        -DoutputDirectory="$tmp" >>"$CACHE_DIR/logs/registry-install.log" 2>&1; then
      rm -rf -- "$tmp"
      show_tail "$CACHE_DIR/logs/registry-install.log"
      die "mvn could not fetch apicurio-registry-app $REGISTRY_VERSION; see $CACHE_DIR/logs/registry-install.log"
    fi
    mkdir -p "$tmp/app"
    tar -xzf "$tmp/apicurio-registry-app-$REGISTRY_VERSION-all.tar.gz" -C "$tmp/app" \
      || { rm -rf -- "$tmp"; die "registry: cannot unpack the downloaded archive"; }
    [[ -f $tmp/app/quarkus-run.jar ]] || { rm -rf -- "$tmp"; die "registry: no quarkus-run.jar in the archive"; }
    rm -rf -- "$REGISTRY_HOME"
    mv -- "$tmp/app" "$REGISTRY_HOME"
    rm -rf -- "$tmp"
    log "registry: installed in $REGISTRY_HOME"
  )
}

registry_ready() {
  [[ $(curl -s -m 3 "$REGISTRY_URL/subjects" 2>/dev/null) == \[* ]]
}

start_registry() {
  local pid java p
  pid=$(find_pid registry)
  if [[ -n $pid ]]; then
    check_same_port registry "$REGISTRY_PORT"
    if registry_ready; then
      log "registry: already up (pid $pid, $REGISTRY_URL)"
      return 0
    fi
    log "registry: pid $pid is running but not serving yet; waiting"
  fi
  if [[ -z $pid ]]; then
    java=$(registry_java)
    if [[ -z $java ]] && ((EUID == 0)) && command -v apt-get >/dev/null 2>&1 \
        && apt-cache show openjdk-21-jre-headless >/dev/null 2>&1; then
      log "registry: no Java 21+; installing openjdk-21-jre-headless"
      mkdir -p "$CACHE_DIR/logs"
      # The stack's apt lock: another stack installing packages meanwhile.
      (exec 7>"$CACHE_DIR/apt.lock"; flock 7
       apt-get install -y -q openjdk-21-jre-headless) >>"$CACHE_DIR/logs/registry-install.log" 2>&1 || true
      java=$(registry_java)
    fi
    [[ -n $java ]] || die "registry: Apicurio Registry needs Java 21 or later and none was found" \
      "(looked at NW_REGISTRY_JAVA, JAVA_HOME, PATH, /usr/lib/jvm/*; an apt attempt, if any, is in" \
      "$CACHE_DIR/logs/registry-install.log); install one or set NW_REGISTRY_JAVA, or set" \
      "NW_STACK_REGISTRY=0 to run without it (the schema registry tests then fail)"
    install_registry
    for p in "$REGISTRY_PORT" "$REGISTRY_MGMT_PORT"; do
      port_in_use "$p" && die "port $p is already taken by $(port_owner "$p"); set NW_REGISTRY_PORT"
    done
    log "registry: starting on $REGISTRY_URL (in-memory storage)"
    mark_log "$REGISTRY_LOG"
    spawn registry "$REGISTRY_HOME" "$REGISTRY_LOG" "$java" -Xmx256m \
      -Dnorthwest.stack="$STACK_DIR" \
      -Dquarkus.http.host="$HOST" -Dquarkus.http.port="$REGISTRY_PORT" \
      -Dquarkus.management.host="$HOST" -Dquarkus.management.port="$REGISTRY_MGMT_PORT" \
      -jar quarkus-run.jar
    echo "$REGISTRY_PORT" >"$(port_file registry)"
    pid=$(<"$(pid_file registry)")
  fi
  local deadline=$((SECONDS + REGISTRY_TIMEOUT))
  until registry_ready; do
    if ! pid_alive "$pid"; then show_tail "$REGISTRY_LOG"; die "registry exited during startup; see $REGISTRY_LOG"; fi
    if ((SECONDS >= deadline)); then show_tail "$REGISTRY_LOG"; die "registry not ready after ${REGISTRY_TIMEOUT}s; see $REGISTRY_LOG"; fi
    sleep 0.3
  done
  log "registry: up (pid $pid, $REGISTRY_URL)"
}

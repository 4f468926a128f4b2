#!/usr/bin/env bash
# The main job, the live-migration demo: brings the dev stack up, starts
# deployments n1 and n2, loads sample entities into n1, runs mixed load
# against n1 throughout, migrates n1 -> n2 (snapshot, journal catch-up,
# verify, cutover), keeps the load running against the new primary, and
# prints the report: phase timings, rows streamed, lag, write pause, requests
# issued vs failed, digests. NW_DEMO_N2_ENGINE=postgres migrates into an n2 on PostgreSQL
# (the stack's server; a fresh schema per run) instead of RocksDB.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ENTITIES="${NW_DEMO_ENTITIES:-100000}"
N2_ENGINE="${NW_DEMO_N2_ENGINE:-rocksdb}"
[[ $N2_ENGINE == rocksdb || $N2_ENGINE == postgres ]] ||
  { echo "NW_DEMO_N2_ENGINE must be rocksdb or postgres, not '$N2_ENGINE'" >&2; exit 2; }
RUN_ID="demo-$(date +%s)"
WORK="$REPO_ROOT/.northwest/$RUN_ID"

say "dev stack (ZooKeeper + Apache Kafka + PostgreSQL)"
"$REPO_ROOT/deploy/stack.sh" up
eval "$("$REPO_ROOT/deploy/stack.sh" env)"
build

mkdir -p "$WORK"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

start_node() { # name config-path port
  NORTHWEST_DATA_DIR="$WORK/$1" NORTHWEST_ZK_ROOT="/northwest/$RUN_ID" NORTHWEST_TOPIC="$RUN_ID.journal" \
    NORTHWEST_DLQ_TOPIC="$RUN_ID.journal.dlq" \
    "$BIN" node --config "$2" >"$WORK/$1.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do
    "$BIN" status --node "http://127.0.0.1:$3" --json >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "node $1 did not start; log:" >&2; tail -30 "$WORK/$1.log" >&2; exit 1
}

N2_CONFIG="$REPO_ROOT/deploy/n2.toml"
if [[ $N2_ENGINE == postgres ]]; then
  N2_CONFIG="$WORK/n2.toml"
  sed -e 's|^# engine = "rocksdb".*|engine = "postgres"|' \
      -e "s|^# password_file = .*|password_file = \"$NW_PG_PASSWORD_FILE\"|" \
      -e "s|^# schema = .*|schema = \"demo_${RUN_ID#demo-}\"|" \
      -e "s|^# port = 5433|port = ${NW_PG##*:}|" "$REPO_ROOT/deploy/n2.toml" >"$N2_CONFIG"
  grep -q '^engine = "postgres"' "$N2_CONFIG" || { echo "could not make n2's PostgreSQL config" >&2; exit 1; }
fi
say "starting n1 (source, journaling, RocksDB) and n2 (target, applying the journal, $N2_ENGINE)"
start_node n1 "$REPO_ROOT/deploy/n1.toml" 8081
start_node n2 "$N2_CONFIG" 8082
echo "dashboards: http://127.0.0.1:8081/  http://127.0.0.1:8082/   logs: $WORK"

say "loading $ENTITIES sample entities into n1"
"$BIN" loadgen --target http://127.0.0.1:8081 --mode load --entities "$ENTITIES" --groups 5000 --ns demo --concurrency 32

say "mixed load on n1 throughout the migration (reads, writes, deletes, multi-op transactions)"
"$BIN" loadgen --target http://127.0.0.1:8081 --mode mixed --entities "$ENTITIES" --groups 5000 --ns demo \
  --duration 0 --reads 0.5 --concurrency 8 --rate 400 >"$WORK/loadgen-n1.txt" 2>"$WORK/loadgen-n1.err" &
LOAD_PID=$!
sleep 3

say "migrating namespace demo: n1 -> n2 (snapshot, catch-up, verify, proxy, switch)"
"$BIN" migrate --from http://127.0.0.1:8081 --to http://127.0.0.1:8082 --namespace demo

say "load keeps running through n1 (now a proxy) and directly against the new primary n2"
"$BIN" loadgen --target http://127.0.0.1:8082 --mode mixed --entities "$ENTITIES" --groups 5000 --ns demo \
  --duration 5s --reads 0.5 --concurrency 8
kill -INT "$LOAD_PID"; wait "$LOAD_PID" || true
echo "load against n1 during the whole migration:"; cat "$WORK/loadgen-n1.txt"

say "final state"
"$BIN" status --node http://127.0.0.1:8081
"$BIN" status --node http://127.0.0.1:8082
"$BIN" digest --node http://127.0.0.1:8082 --ns demo
if grep -q " 0 failed" "$WORK/loadgen-n1.txt"; then
  say "demo complete (n1 on RocksDB, n2 on $N2_ENGINE): n2 is primary, digests matched at cutover, 0 failed requests"
else
  say "demo finished WITH FAILED REQUESTS (see $WORK)"; exit 1
fi

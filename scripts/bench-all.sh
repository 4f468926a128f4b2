#!/usr/bin/env bash
# Every figure README's "Current figures" gives, from one run on one commit:
# each bench's JSON and text land in target/bench-all/<commit>/ with the
# wall time it took (summary.txt). Takes ~1.5 h on the 2-core dev machine;
# NW_BENCH_SCALE=10000000 adds the 10M-entity migration (~40 min more),
# NW_BENCH_SOAK=20m shortens the soak. Run it on a quiet machine: nothing
# else should build or load the cores meanwhile.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

commit="$(git -C "$REPO_ROOT" rev-parse --short HEAD)"
git -C "$REPO_ROOT" diff --quiet HEAD -- . ':!*.md' || {
  echo "the tree differs from $commit: commit first, so the figures name the code they measured" >&2
  exit 1
}
OUT="${1:-$CARGO_TARGET_DIR/bench-all/$commit}"
mkdir -p "$OUT"
say "dev stack"
"$REPO_ROOT/deploy/stack.sh" up
eval "$("$REPO_ROOT/deploy/stack.sh" env)"
build
# Every bench and demo runs this copy: the tree may be edited and built
# meanwhile without changing what is measured (but a build on these cores
# would disturb the figures).
cp "$BIN" "$OUT/northwest"
export NW_BIN="$OUT/northwest"
BIN="$NW_BIN"
export NORTHWEST_LOG="${NORTHWEST_LOG:-warn}"

summary="$OUT/summary.txt"
echo "commit $commit, started $(date -u +%FT%TZ)" >"$summary"
bench() { # name args...
  local name=$1 t0 rc=0
  shift
  say "$name: northwest bench --json $*"
  t0=$(date +%s)
  "$BIN" bench --json "$@" >"$OUT/$name.json" 2>"$OUT/$name.log" || rc=$?
  echo "$name rc=$rc $(($(date +%s) - t0)) s: northwest bench --json $*" | tee -a "$summary"
}

t0=$(date +%s)
NW_DEMO_ENTITIES=100000 "$REPO_ROOT/scripts/demo.sh" >"$OUT/demo.log" 2>&1 &&
  echo "demo rc=0 $(($(date +%s) - t0)) s" | tee -a "$summary" ||
  echo "demo FAILED, see $OUT/demo.log" | tee -a "$summary"
t0=$(date +%s)
NW_DEMO_N2_ENGINE=postgres NW_DEMO_ENTITIES=20000 "$REPO_ROOT/scripts/demo.sh" >"$OUT/demo-pg.log" 2>&1 &&
  echo "demo-pg rc=0 $(($(date +%s) - t0)) s" | tee -a "$summary" ||
  echo "demo-pg FAILED, see $OUT/demo-pg.log" | tee -a "$summary"

bench store store --clients 64
bench journal journal
bench migrate migrate --table3-sizes 100,1024 --load-entities 100000
bench throttle migrate --only table2 --max-source-p99-ms 5 --phase-duration 30s
bench rollback rollback
bench overhead overhead --rate 500 --duration 30s --repeats 3 \
  --modes baseline,journaling,journaling-eager,migrating
bench scale migrate --only scale --scale-entities 1000000 --phase-duration 10s --rate 400
if [[ -n ${NW_BENCH_SCALE:-} ]]; then
  bench "scale-$NW_BENCH_SCALE" migrate --only scale --scale-entities "$NW_BENCH_SCALE" \
    --phase-duration 10s --rate 400
fi
bench soak soak --duration "${NW_BENCH_SOAK:-30m}" --rate 1000 --out "$OUT/soak"
bench zk zk
echo "finished $(date -u +%FT%TZ)" >>"$summary"
say "figures in $OUT"
cat "$summary"

# Shared by scripts/*.sh: toolchain checks, one cached target directory, build.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${NORTHWEST_CACHE:-$HOME/.cache/northwest}/target}"
# NW_BIN: a binary built before (scripts/bench-all.sh runs a copy, so the
# tree may change meanwhile); then build() builds nothing.
BIN="${NW_BIN:-$CARGO_TARGET_DIR/release/northwest}"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

need_cargo() {
  if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust (https://rustup.rs) and re-run" >&2
    exit 1
  fi
}

# A cold build takes ~16 minutes on 2 cores (RocksDB's C++ most of it); later builds are incremental.
build() {
  if [[ -n ${NW_BIN:-} ]]; then
    [[ -x $NW_BIN ]] || { echo "NW_BIN=$NW_BIN is not an executable" >&2; exit 1; }
    return 0
  fi
  need_cargo
  say "building (release, target dir $CARGO_TARGET_DIR; the first build takes ~16 min)"
  (cd "$REPO_ROOT" && cargo build --release --workspace --bins)
}

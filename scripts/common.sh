# Shared by scripts/*.sh: toolchain checks, one cached target directory, build.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${NORTHWEST_CACHE:-$HOME/.cache/northwest}/target}"
BIN="$CARGO_TARGET_DIR/release/northwest"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

need_cargo() {
  if ! command -v cargo >/dev/null; then
    echo "cargo not found: install Rust (https://rustup.rs) and re-run" >&2
    exit 1
  fi
}

# A cold build takes ~16 minutes on 2 cores (RocksDB's C++ most of it); later builds are incremental.
build() {
  need_cargo
  say "building (release, target dir $CARGO_TARGET_DIR; the first build takes ~16 min)"
  (cd "$REPO_ROOT" && cargo build --release --workspace --bins)
}

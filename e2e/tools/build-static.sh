#!/usr/bin/env bash
# Builds wharf as a fully static release binary (glibc, crt-static) for the scratch image.
# Prints its path.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
target=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/wharf/target}
cd "$repo"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$target" -q >&2
echo "$CARGO_TARGET_DIR/$target/release/wharf"

#!/usr/bin/env bash
# Builds wharf as a fully static release binary (glibc, crt-static) for the scratch image.
# Prints its path.
#
# The binary is kept in the cache under a hash of everything it is built from (the sources,
# Cargo.toml/Cargo.lock, the toolchain and the flags), so a second clone of the same commit, or
# CI's fresh clone, reuses it at once: cargo's own fingerprints include the checkout's path, and
# a new path would rebuild the crate (minutes, with LTO).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
target=x86_64-unknown-linux-gnu
cache=${WHARF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wharf}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}
flags="-C target-feature=+crt-static"
cd "$repo"
key=$({
    rustc -vV
    echo "$flags $target"
    find Cargo.toml Cargo.lock src -type f -print0 | sort -z | xargs -0 sha256sum
} | sha256sum | cut -c1-24)
kept=$cache/bin/wharf-$key
if [ ! -x "$kept" ]; then
    RUSTFLAGS="$flags" cargo build --release --locked --target "$target" -q >&2
    mkdir -p "$cache/bin"
    # Older builds go: one binary per source state is all anyone reuses.
    find "$cache/bin" -name 'wharf-*' -mtime +2 -delete 2>/dev/null || true
    cp "$CARGO_TARGET_DIR/$target/release/wharf" "$kept.tmp" && mv "$kept.tmp" "$kept"
fi
echo "$kept"

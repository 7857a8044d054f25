#!/usr/bin/env bash
# Builds release binaries statically linked against glibc (crt-static),
# still position-independent (the kernel places them at a random address,
# as it does a dynamic build). This is how the project's binaries are built
# for use: the compose images hold them, and `scripts/bench.sh` measures
# the CLI built this way. A static `core-client` starts without the
# dynamic loader (no libraries to map, no symbols to look up), which is a
# large part of a short command's time through the agent
# (BENCHMARKS.md, "The CLI built as it is shipped").
#
#   scripts/static-build.sh -p core-client --bin core-client
#   # -> target/x86_64-unknown-linux-gnu/release/core-client
#
# The arguments go to `cargo build --release --locked`. The target is
# named because cargo applies RUSTFLAGS to proc-macros too unless it is,
# and a proc-macro cannot be built with crt-static; the binaries are
# therefore in target/x86_64-unknown-linux-gnu/release, not
# target/release. Each binary named by `--bin` is checked to be static.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
out=target/$target/release

die() { echo "static-build: $*" >&2; exit 1; }

bins=()
prev=""
for arg in "$@"; do
    [ "$prev" = "--bin" ] && bins+=("$arg")
    case "$arg" in --bin=*) bins+=("${arg#--bin=}") ;; esac
    prev=$arg
done
[ "${#bins[@]}" -gt 0 ] || die "name the binaries to build with --bin NAME"

RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --locked --target "$target" "$@"

for bin in "${bins[@]}"; do
    [ -x "$out/$bin" ] || die "$out/$bin was not built"
    # A dynamic executable names the loader it needs; a static one none.
    if readelf -l "$out/$bin" | grep -q 'Requesting program interpreter'; then
        die "$out/$bin is not statically linked"
    fi
done

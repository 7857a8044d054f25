#!/usr/bin/env bash
# Fuzzes every decoder that takes bytes from the network or a file (the
# targets in fuzz/fuzz_targets/), each for SECONDS on a scratch copy of its
# seed corpus (fuzz/corpus/<target>/, never written to), and fails if any
# target crashes, hangs or leaks. Crashing inputs are kept in
# fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh            # 10 s per target
#   scripts/fuzz.sh 60         # a minute each
#   FUZZ_RUNS=10000000 scripts/fuzz.sh    # a fixed number of executions each instead
#
# Works on the stable toolchain: cargo-fuzz's -Z flags are allowed with
# RUSTC_BOOTSTRAP=1. Installs cargo-fuzz (pinned) if it is missing.
# FUZZ_SANITIZER (default address) is passed to cargo fuzz (none: faster,
# without AddressSanitizer).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-10}
runs=${FUZZ_RUNS:-}
sanitizer=${FUZZ_SANITIZER:-address}
version=0.13.2

die() { echo "fuzz: $*" >&2; exit 1; }
case "$seconds" in ''|*[!0-9]*) die "SECONDS must be a whole number (got '$seconds')";; esac

if ! cargo fuzz --version 2>/dev/null | grep -q " $version\$"; then
    echo "== installing cargo-fuzz $version"
    cargo install cargo-fuzz --version "$version" --locked
fi

# The sanitizer and coverage flags are nightly-only (-Z): allow them here.
export RUSTC_BOOTSTRAP=1
# Cargo caches the compiler's answers, a refusal of -Z included (from a
# run without RUSTC_BOOTSTRAP): start from a fresh probe.
rm -f fuzz/target/.rustc_info.json

echo "== building the fuzz targets (sanitizer: $sanitizer)"
cargo fuzz build -O -s "$sanitizer"
# The seed writer is an example (cargo fuzz leaves it out): checked here
# so that it keeps up with the messages it encodes.
(cd fuzz && cargo check --quiet --example seeds)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
failures=()
for source in fuzz/fuzz_targets/*.rs; do
    target=$(basename "$source" .rs)
    seeds=fuzz/corpus/$target
    [ -d "$seeds" ] || die "no seed corpus for $target ($seeds)"
    mkdir -p "$work/$target"
    if [ -n "$runs" ]; then
        limit=(-runs="$runs")
    else
        limit=(-max_total_time="$seconds")
    fi
    echo "== $target"
    log=$work/$target.log
    # New inputs go to the scratch directory (first); the seeds are read.
    if cargo fuzz run -O -s "$sanitizer" "$target" "$work/$target" "$seeds" -- \
        "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        passed=$((passed + 1))
        grep -E '^Done [0-9]+ runs|^stat::(number_of_executed_units|peak_rss_mb)' "$log" | sed 's/^/   /'
    else
        failed=$((failed + 1))
        failures+=("$target")
        tail -n 40 "$log" >&2
    fi
done

echo "fuzz: $passed passed, $failed failed"
if [ "$failed" -ne 0 ]; then
    die "crashes in: ${failures[*]} (inputs in fuzz/artifacts/)"
fi

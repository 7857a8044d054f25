#!/usr/bin/env bash
# The soak benchmark: 50 honest clients running mixed, checked commands
# (short, bulk with a checksum, interactive on a terminal, stdin) for
# MINUTES against a relay and an exec-server while the relay is killed and
# started again, the exec-server's link is cut and its path changed, and
# 127.0.0.2 floods the relay. Prints commands completed, bytes checked,
# losses, resumes and each process's memory over the run (growth per
# hour); fails if a command was lost.
#
#   scripts/soak.sh 30                      # the recorded run (BENCHMARKS.md, "Soak")
#   scripts/soak.sh 5 --clients 10          # options go to the driver (tests/examples/soak.rs)
#
# Builds the binaries and the driver with the dev profile (the figures
# are counts and memory, not speed).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "soak: $*" >&2; exit 1; }
minutes=${1:-}
case "$minutes" in ''|*[!0-9]*) die "usage: scripts/soak.sh MINUTES [driver options]";; esac
[ "$minutes" -ge 1 ] || die "MINUTES must be at least 1"
shift

cargo build --quiet --bins -p relay -p exec-server -p core-client
exec cargo run --quiet -p integration-tests --example soak -- --minutes "$minutes" "$@"

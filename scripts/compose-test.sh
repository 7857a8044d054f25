#!/usr/bin/env bash
# The compose integration tests, start to finish: builds the static
# binaries and images (scripts/compose-build.sh), brings the stack of
# docker-compose.yml up under a project of its own, runs the compose tests
# against it (tests/tests/compose.rs), and always tears everything down
# (containers, networks, volumes), whether the tests pass or not.
#
#   scripts/compose-test.sh
#
# JAEGER_IMAGE picks the trace store: by default the repository's trace
# sink (no registry needed); JAEGER_IMAGE=jaegertracing/jaeger:<tag> runs
# the same tests against real Jaeger. Extra arguments go to the test
# binary (e.g. a test name filter). Then the stack is brought up again
# with TLS between the containers (docker-compose.tls.yml: certificates
# made at start-up) and the TLS test runs against it (REX_COMPOSE_TLS=1);
# last, as a fleet of two relays on etcd (docker-compose.fleet.yml) for the
# fleet's tests (REX_COMPOSE_FLEET=1).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "compose-test: $*" >&2; exit 1; }

if docker compose version >/dev/null 2>&1; then
    compose="docker compose"
elif command -v docker-compose >/dev/null 2>&1; then
    compose="docker-compose"
else
    die "neither 'docker compose' nor 'docker-compose' is installed"
fi
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon (is it running?)"

project="rex-compose-test-$$"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export REX_IMAGE_PREFIX="${REX_IMAGE_PREFIX:-rex}"
export JAEGER_IMAGE="${JAEGER_IMAGE:-$REX_IMAGE_PREFIX-trace-sink:local}"
export JAEGER_UI_PORT="${JAEGER_UI_PORT:-$(free_port)}"
# The exec-server's resume grace (tests/tests/compose.rs knows this
# value): longer than the 40 s the HTTP/2 keepalives may take to find a
# cut connection dead at either end, so that a command in flight across a
# network cut is always resumed in time; the test of a relay down for
# longer than the grace waits it out.
export REX_RESUME_GRACE="${REX_RESUME_GRACE:-60s}"

files=(-f docker-compose.yml)
dc() { $compose -p "$project" "${files[@]}" "$@"; }

teardown() {
    local status=$?
    if [ "$status" -ne 0 ]; then
        echo "== compose logs (the run failed)" >&2
        dc logs --no-color --tail=100 >&2 || true
    fi
    echo "== tearing down $project"
    dc down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true
    # One-off containers left behind by an interrupted test.
    docker ps -aq --filter "name=$project" | xargs -r docker rm -f >/dev/null 2>&1 || true
    docker network ls -q --filter "name=$project" | xargs -r docker network rm >/dev/null 2>&1 || true
    exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== images"
scripts/compose-build.sh

echo "== stack up ($compose, project $project, trace store $JAEGER_IMAGE)"
dc up -d jaeger relay exec-server

echo "== the default core-client command"
dc run --rm -T core-client

echo "== compose tests"
REX_COMPOSE="$compose" \
REX_COMPOSE_PROJECT="$project" \
REX_COMPOSE_FILE="$PWD/docker-compose.yml" \
REX_JAEGER_URL="http://127.0.0.1:$JAEGER_UI_PORT" \
    cargo test --locked --workspace --test compose -- --nocapture "$@"

echo "== the stack again, with TLS between the containers (docker-compose.tls.yml)"
files+=(-f docker-compose.tls.yml)
dc up -d jaeger relay exec-server
dc run --rm -T core-client

echo "== compose tests over TLS"
REX_COMPOSE="$compose" \
REX_COMPOSE_PROJECT="$project" \
REX_COMPOSE_FILE="$PWD/docker-compose.yml:$PWD/docker-compose.tls.yml" \
REX_COMPOSE_TLS=1 \
REX_JAEGER_URL="http://127.0.0.1:$JAEGER_UI_PORT" \
    cargo test --locked --workspace --test compose -- --nocapture tls_

echo "== the stack again, a fleet of two relays on etcd (docker-compose.fleet.yml)"
files=(-f docker-compose.yml -f docker-compose.fleet.yml)
dc up -d jaeger etcd relay relay-b exec-server
dc run --rm -T core-client

echo "== compose tests of the fleet"
REX_COMPOSE="$compose" \
REX_COMPOSE_PROJECT="$project" \
REX_COMPOSE_FILE="$PWD/docker-compose.yml:$PWD/docker-compose.fleet.yml" \
REX_COMPOSE_FLEET=1 \
REX_JAEGER_URL="http://127.0.0.1:$JAEGER_UI_PORT" \
    cargo test --locked --workspace --test compose -- --nocapture fleet_

#!/usr/bin/env bash
# Builds the compose stack's images with no registry: statically linked
# binaries (glibc, crt-static) and a static busybox, each image FROM scratch;
# and, for the fleet of relays (docker-compose.fleet.yml), an etcd image of
# this machine's etcd and etcdctl with the C library they are linked to.
#
#   scripts/compose-build.sh            # rex-relay:local, rex-exec-server:local,
#                                       # rex-core-client:local, rex-trace-sink:local,
#                                       # rex-etcd:local
#
# REX_IMAGE_PREFIX changes the images' name prefix (default "rex").
# Needs: cargo, docker, a static busybox (Debian: busybox-static), and
# etcd and etcdctl (Debian: etcd-server, etcd-client).
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=${REX_IMAGE_PREFIX:-rex}
target=x86_64-unknown-linux-gnu
context=target/docker-context

die() { echo "compose-build: $*" >&2; exit 1; }

is_static() { ! readelf -l "$1" 2>/dev/null | grep -q 'Requesting program interpreter'; }

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon (is it running?)"

busybox=${BUSYBOX:-}
if [ -z "$busybox" ]; then
    for candidate in /bin/busybox /usr/bin/busybox; do
        if [ -x "$candidate" ] && is_static "$candidate"; then busybox=$candidate; break; fi
    done
fi
[ -n "$busybox" ] && is_static "$busybox" \
    || die "no static busybox found (install Debian's busybox-static, or set BUSYBOX=PATH)"

for tool in etcd etcdctl; do
    command -v "$tool" >/dev/null \
        || die "no $tool found (install Debian's etcd-server and etcd-client)"
done

echo "== static binaries (scripts/static-build.sh)"
scripts/static-build.sh \
    -p relay -p exec-server -p core-client -p integration-tests \
    --bin relay --bin exec-server --bin core-client --bin trace-sink

rm -rf "$context"
mkdir -p "$context"
for bin in relay exec-server core-client trace-sink; do
    strip -o "$context/$bin" "target/$target/release/$bin"
done
cp "$busybox" "$context/busybox"

# etcd's image: its two programs and every library they load (by the path
# they are loaded from), and a data directory that only its user reads.
root="$context/etcd-root"
for tool in etcd etcdctl; do
    bin=$(command -v "$tool")
    install -D -m 0755 "$bin" "$root/usr/bin/$tool"
    for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
        [ -e "$root$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
    done
done
install -d -m 0700 "$context/etcd-data"

echo "== images"
for image in relay exec-server core-client trace-sink etcd; do
    # The output (and the legacy builder's deprecation notice) is shown
    # only when the build fails.
    if ! out=$(docker build --quiet -f "docker/$image.Dockerfile" -t "$prefix-$image:local" "$context" 2>&1); then
        echo "$out" >&2
        die "building $prefix-$image:local failed"
    fi
    echo "built $prefix-$image:local"
done

# REX_PRUNE_BUILDS=1 (CI, where disk is scarce): the images hold the
# binaries now, so their build is removed.
if [ "${REX_PRUNE_BUILDS:-0}" = 1 ]; then
    rm -rf "target/$target" "$context"
fi

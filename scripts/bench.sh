#!/usr/bin/env bash
# The benchmarks side by side with OpenSSH, a plain TCP relay (socat) and
# the exec-server's own local spawn, written into BENCHMARKS.md.
#
#   scripts/bench.sh                      # every scenario, 5 rounds
#   scripts/bench.sh --rounds 7 --only warm,cold
#   scripts/bench.sh --only network --rtts 0,50 --write /tmp/net.md
#   scripts/bench.sh --quick              # every scenario once, small counts, writes nothing
#
# Sets up what it needs on this machine and takes it all down again: the
# openssh-server and socat packages (installed if missing; the system sshd
# is not started), a user `rexbench` whose login shell is /bin/sh (so ssh
# measures ssh, not someone's shell start-up files), a throwaway host key
# and client key, and an sshd bound to 127.0.0.1 only on a free port.
# Needs root (for the user and sshd). Arguments go to the benchmark
# (tests/benches/versus.rs): --rounds, --only, --bulk-mib, --pipe-mib,
# --sessions, --execs, --tracing-execs, --rtts, --network-runs, --quick;
# --write defaults to BENCHMARKS.md (with --quick, to nothing: its small
# counts are a check that everything runs, not figures to keep).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (it adds a user and runs an sshd)"

user=rexbench
work=$(mktemp -d /tmp/rex-bench.XXXXXX)
sshd_pid=""
created_user=""
cleanup() {
    [ -n "$sshd_pid" ] && kill "$sshd_pid" 2>/dev/null || true
    [ -n "$created_user" ] && userdel --remove "$user" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null || missing+=(openssh-client)
command -v socat >/dev/null || missing+=(socat)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "== installing ${missing[*]}"
    # Keep the package scripts from starting the system's own sshd.
    restore_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        restore_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    [ -n "$restore_policy" ] && rm -f /usr/sbin/policy-rc.d
fi

if ! id "$user" >/dev/null 2>&1; then
    useradd --create-home --home-dir "/home/$user" --shell /bin/sh "$user"
    created_user=1
fi
# No password, but not locked either ('!' would make sshd refuse the key).
usermod -p '*' "$user"
[ "$(getent passwd "$user" | cut -d: -f7)" = /bin/sh ] \
    || die "user $user exists with a login shell other than /bin/sh"

echo "== sshd on 127.0.0.1 (throwaway keys in $work)"
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/client_key"
cp "$work/client_key.pub" "$work/authorized_keys"
chmod 755 "$work"
chmod 644 "$work/authorized_keys"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/sshd_config" <<CONFIG
ListenAddress 127.0.0.1
Port $port
HostKey $work/host_key
PidFile $work/sshd.pid
AuthorizedKeysFile $work/authorized_keys
AllowUsers $user
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
X11Forwarding no
PrintMotd no
PrintLastLog no
MaxSessions 64
MaxStartups 64:30:128
CONFIG
mkdir -p /run/sshd
/usr/sbin/sshd -f "$work/sshd_config" -D -e 2> "$work/sshd.log" &
sshd_pid=$!
ssh_opts=(-F /dev/null -p "$port" -i "$work/client_key" -o StrictHostKeyChecking=no
          -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR)
for _ in $(seq 1 50); do
    ssh "${ssh_opts[@]}" "$user@127.0.0.1" true 2>/dev/null && break
    sleep 0.1
done
ssh "${ssh_opts[@]}" "$user@127.0.0.1" true \
    || { cat "$work/sshd.log" >&2; die "cannot ssh to the local sshd"; }

echo "== release binaries"
cargo build --release --locked -p core-client -p relay -p exec-server
# The CLI as it is shipped (and as the compose images hold it): static.
# Every scenario that starts `core-client` runs this one, the agent too.
echo "== the CLI, static (scripts/static-build.sh)"
scripts/static-build.sh -p core-client --bin core-client

echo "== benchmark"
write="$PWD/BENCHMARKS.md"
for arg in "$@"; do
    case "$arg" in --write|--quick) write="" ;; esac
done
cargo bench --locked -p integration-tests --bench versus -- \
    --ssh-port "$port" --ssh-key "$work/client_key" --ssh-user "$user" \
    --core-client "$PWD/target/x86_64-unknown-linux-gnu/release/core-client" \
    ${write:+--write "$write"} "$@"

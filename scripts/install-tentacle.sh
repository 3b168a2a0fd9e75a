#!/usr/bin/env bash
# Install a Cuttle Tentacle on this machine, register it with a server, and start it as a
# systemd service. One line on a fresh VM:
#
#   curl -fsSL https://cuttle.example/install-tentacle.sh | sudo CUTTLE_API_KEY=... bash -s -- \
#       --server https://cuttle.example:8443 --server-thumbprint <T> \
#       --name web-01 --environment Production --role web-server [--comms-style polling]
#
# The API key is read from CUTTLE_API_KEY (never a command-line argument: other users can read
# those). Running it again is safe: the instance and its certificate are kept, the
# registration is replaced (--force) and the service restarted.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: install-tentacle.sh --server URL --server-thumbprint T --name NAME --environment ENV
                           [--role ROLE]... [--comms-style listening|polling] [--port N]
                           [--polling-address HOST:PORT] [--public-hostname NAME]
                           [--source PIP-SPEC] [--prefix DIR] [--home DIR] [--no-service]
Environment: CUTTLE_API_KEY (required): a key allowed to register machines
             (cuttle api-key create --permission machine:register).
  --source   what to install: a package spec, a wheel or a source folder
             (default: cuttle-tentacle from the package index)
  --prefix   where the virtual environment goes (default /opt/cuttle-tentacle)
  --home     the instance's home (default /etc/cuttle/tentacle)
  --port     listening port (default 10933; listening Tentacles only)
EOF
}

die() { echo "install-tentacle: $*" >&2; exit 1; }

server="" thumbprint="" name="" environments=() roles=() style="listening" port=10933
polling_address="" public_hostname="" source="cuttle-tentacle" prefix="/opt/cuttle-tentacle"
home="/etc/cuttle/tentacle" service=1
while [ $# -gt 0 ]; do
    case "$1" in
        --server) server=$2; shift 2 ;;
        --server-thumbprint) thumbprint=$2; shift 2 ;;
        --name) name=$2; shift 2 ;;
        --environment) environments+=("$2"); shift 2 ;;
        --role) roles+=("$2"); shift 2 ;;
        --comms-style) style=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --polling-address) polling_address=$2; shift 2 ;;
        --public-hostname) public_hostname=$2; shift 2 ;;
        --source) source=$2; shift 2 ;;
        --prefix) prefix=$2; shift 2 ;;
        --home) home=$2; shift 2 ;;
        --no-service) service=0; shift ;;
        --api-key) die "pass the API key in CUTTLE_API_KEY, not on the command line" ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done
[ -n "$server" ] || die "--server is required"
[ -n "$thumbprint" ] || die "--server-thumbprint is required"
[ -n "$name" ] || die "--name is required"
[ ${#environments[@]} -gt 0 ] || die "at least one --environment is required"
[ -n "${CUTTLE_API_KEY:-}" ] || die "set CUTTLE_API_KEY to a key allowed to register machines"
case "$style" in listening|polling) ;; *) die "--comms-style must be listening or polling" ;; esac

python=""
for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        python=$(command -v "$candidate")
        break
    fi
done
[ -n "$python" ] || die "Python 3.11 or newer is needed"

if ! command -v uv >/dev/null 2>&1; then
    echo "installing uv with pip"
    "$python" -m pip install --quiet --user uv || "$python" -m pip install --quiet uv ||
        die "could not install uv"
    export PATH="$HOME/.local/bin:$PATH"
fi

echo "installing $source into $prefix"
mkdir -p "$prefix"
[ -x "$prefix/bin/python" ] || uv venv --quiet --python "$python" "$prefix"
# A source folder of the tentacle distribution needs its sibling protocol distribution.
if [ -d "$source" ] && [ -f "$source/../protos/pyproject.toml" ]; then
    uv pip install --quiet --python "$prefix/bin/python" "$source/../protos" "$source"
else
    uv pip install --quiet --python "$prefix/bin/python" "$source"
fi
tentacle="$prefix/bin/tentacle"

"$tentacle" create-instance --home "$home"
register=(register-with --home "$home" --server "$server" --server-thumbprint "$thumbprint"
    --name "$name" --comms-style "$style" --force)
for env in "${environments[@]}"; do register+=(--environment "$env"); done
for role in "${roles[@]}"; do register+=(--role "$role"); done
if [ "$style" = listening ]; then
    "$tentacle" configure --home "$home" --port "$port" --trust "$thumbprint"
    [ -z "$public_hostname" ] || register+=(--public-hostname "$public_hostname")
else
    [ -z "$polling_address" ] || register+=(--polling-address "$polling_address")
fi
"$tentacle" "${register[@]}"

if [ "$service" = 1 ]; then
    command -v systemctl >/dev/null 2>&1 || die "systemd not found; rerun with --no-service"
    "$tentacle" service install --home "$home"
    systemctl daemon-reload
    systemctl enable --now cuttle-tentacle
    systemctl restart cuttle-tentacle
    echo "Tentacle $name is running (systemctl status cuttle-tentacle)"
else
    echo "Tentacle $name is registered; run it with: $tentacle run --home $home"
fi

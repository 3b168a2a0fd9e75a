#!/usr/bin/env bash
# Install a Cuttle Tentacle on this machine, register it with a server, and start it as a
# systemd service. From a Cuttle checkout (or with its wheels copied to the VM):
#
#   sudo CUTTLE_SERVER=https://cuttle.example:8443 CUTTLE_SERVER_THUMBPRINT=<T> \
#       CUTTLE_API_KEY=<K> ./scripts/install-tentacle.sh \
#       --name web-01 --environment Production --role web-server [--comms-style polling]
#
# The API key is read from CUTTLE_API_KEY (never a command-line argument: other users can read
# those). Running it again is safe: the instance and its certificate are kept, the
# registration is replaced (--force) and the service restarted.
#
# The system Python is never changed: the Tentacle gets its own virtual environment in
# --prefix, made with the system's Python 3.11+ (as root with apt, python3-venv is installed
# first: stock Debian and Ubuntu images lack it, and their Python refuses `pip install` outside
# a virtual environment, PEP 668). Where the system Python is older than 3.11, uv is bootstrapped
# in a temporary environment and makes the prefix with a uv-managed Python kept in
# <prefix>/.python. A virtual environment that happens to be active or first on PATH is ignored.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: install-tentacle.sh --server URL --server-thumbprint T --name NAME --environment ENV
                           [--role ROLE]... [--comms-style listening|polling] [--port N]
                           [--listen-host ADDR] [--polling-address HOST:PORT]
                           [--public-hostname NAME] [--source PATH] [--prefix DIR]
                           [--home DIR] [--run-scripts-as USER[:GROUP]] [--no-service]
Environment: CUTTLE_API_KEY (required): a key allowed to register machines
             (cuttle api-key create --permission machine:register);
             CUTTLE_SERVER, CUTTLE_SERVER_THUMBPRINT: defaults for --server and
             --server-thumbprint, as for every other Cuttle command.
  --source       what to install: a cuttle_tentacle wheel (a cuttle_protocol wheel beside
                 it is installed with it), a folder of those wheels, or a Cuttle checkout
                 (default: the checkout this script is in; Cuttle is not on the package
                 index yet, so nothing is ever installed from it by name)
  --prefix       the Tentacle's own virtual environment (default /opt/cuttle-tentacle)
  --home         the instance's home (default /var/lib/cuttle-tentacle; an existing
                 /etc/cuttle/tentacle home from older installs keeps being used)
  --port         listening port (default 10933; listening Tentacles only)
  --listen-host  address a listening Tentacle binds (default 0.0.0.0, all interfaces, as
                 Octopus does; e.g. a private address to keep it off a public one)
  --run-scripts-as
                 run scripts as this user (and group) instead of as root, the service's
                 user; each stays in its cgroup and out of the home ("" goes back to root;
                 not given: an existing home keeps its setting)
  --no-service   do not write or start the systemd unit
EOF
}

die() { echo "install-tentacle: $*" >&2; exit 1; }
note() { echo "install-tentacle: $*"; }

# Where this script lives, when it is a file (not piped into bash): a checkout to build from.
checkout=""
if [ -n "${BASH_SOURCE[0]:-}" ] && [ -f "${BASH_SOURCE[0]}" ]; then
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    if [ -f "$here/tentacle/pyproject.toml" ] && [ -f "$here/protos/pyproject.toml" ]; then
        checkout=$here
    fi
fi

server="${CUTTLE_SERVER:-}" thumbprint="${CUTTLE_SERVER_THUMBPRINT:-}" name="" environments=()
roles=() style="listening" port=10933 listen_host="" polling_address="" public_hostname=""
source="" prefix="/opt/cuttle-tentacle" home="" service=1 run_scripts_as="" set_run_as=0
while [ $# -gt 0 ]; do
    case "$1" in
        --server) server=$2; shift 2 ;;
        --server-thumbprint) thumbprint=$2; shift 2 ;;
        --name) name=$2; shift 2 ;;
        --environment) environments+=("$2"); shift 2 ;;
        --role) roles+=("$2"); shift 2 ;;
        --comms-style) style=$2; shift 2 ;;
        --port) port=$2; shift 2 ;;
        --listen-host) listen_host=$2; shift 2 ;;
        --polling-address) polling_address=$2; shift 2 ;;
        --public-hostname) public_hostname=$2; shift 2 ;;
        --source) source=$2; shift 2 ;;
        --prefix) prefix=$2; shift 2 ;;
        --home) home=$2; shift 2 ;;
        --run-scripts-as) run_scripts_as=$2; set_run_as=1; shift 2 ;;
        --no-service) service=0; shift ;;
        --api-key) die "pass the API key in CUTTLE_API_KEY, not on the command line" ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option $1" ;;
    esac
done
[ -n "$server" ] || die "--server (or CUTTLE_SERVER) is required"
[ -n "$thumbprint" ] || die "--server-thumbprint (or CUTTLE_SERVER_THUMBPRINT) is required"
[ -n "$name" ] || die "--name is required"
[ ${#environments[@]} -gt 0 ] || die "at least one --environment is required"
[ -n "${CUTTLE_API_KEY:-}" ] || die "set CUTTLE_API_KEY to a key allowed to register machines"
case "$style" in listening|polling) ;; *) die "--comms-style must be listening or polling" ;; esac
[ "$style" = listening ] || [ -z "$listen_host" ] || die "--listen-host is for listening Tentacles"

if [ -z "$home" ]; then
    home=/var/lib/cuttle-tentacle
    if [ -f /etc/cuttle/tentacle/tentacle.json ] && [ ! -f "$home/tentacle.json" ]; then
        home=/etc/cuttle/tentacle
        note "keeping the existing home $home"
    fi
fi

# An active virtual environment must not decide where anything goes.
unset VIRTUAL_ENV CONDA_PREFIX PYTHONHOME PIP_USER PIP_PREFIX PIP_TARGET

# The first `name` on PATH that is a system interpreter (not a virtual environment's) at least
# version $2.$3.
find_python() {
    local floor_major=$1 floor_minor=$2 name dir candidate
    local IFS=:
    for name in python3.13 python3.12 python3.11 python3; do
        for dir in $PATH; do
            candidate="$dir/$name"
            [ -x "$candidate" ] || continue
            [ -e "$dir/../pyvenv.cfg" ] && continue
            if "$candidate" -c "import sys; sys.exit(sys.prefix != sys.base_prefix
                or sys.version_info < ($floor_major, $floor_minor))" 2>/dev/null; then
                echo "$candidate"
                return 0
            fi
        done
    done
    return 1
}

# Make sure $1 can create virtual environments with pip; Debian and Ubuntu split that out.
ensure_venv_module() {
    local python=$1 version
    "$python" -c 'import ensurepip, venv' 2>/dev/null && return 0
    version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        note "installing python$version-venv with apt (the system Python itself is not changed)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null || die "apt-get update failed"
        apt-get install -y -qq "python$version-venv" >/dev/null ||
            die "could not install python$version-venv"
    fi
    "$python" -c 'import ensurepip, venv' 2>/dev/null ||
        die "$python cannot make virtual environments: install python$version-venv (or python3-venv)"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ ! -x "$prefix/bin/python" ]; then
    if python=$(find_python 3 11); then
        ensure_venv_module "$python"
        note "making $prefix with $python"
        "$python" -m venv "$prefix"
    else
        # Older than Cuttle's floor (Ubuntu 22.04 ships 3.10): uv brings a Python of its own.
        bootstrap=$(find_python 3 8) || die "no Python 3 found: install python3"
        ensure_venv_module "$bootstrap"
        note "the system Python is older than 3.11: bootstrapping uv for a uv-managed Python"
        "$bootstrap" -m venv "$tmp/uv"
        "$tmp/uv/bin/python" -m pip install --quiet uv || die "could not install uv"
        UV_PYTHON_INSTALL_DIR="$prefix/.python" "$tmp/uv/bin/uv" venv --quiet --seed \
            --allow-existing --managed-python --python 3.12 "$prefix" ||
            die "uv could not make $prefix with a managed Python 3.12"
    fi
fi
pip=("$prefix/bin/python" -m pip --disable-pip-version-check)
if ! "${pip[@]}" --version >/dev/null 2>&1; then
    # A prefix made by an older installer (uv venv) has no pip: add it from the standard library.
    ensure_venv_module "$prefix/bin/python"
    "$prefix/bin/python" -m ensurepip --default-pip >/dev/null || die "could not add pip to $prefix"
fi

# What to install. Cuttle's own distributions only ever come from files or folders given here:
# the names are not published on the package index, so asking it for them could install
# someone else's package.
newest() { find "$1" -maxdepth 1 -name "$2" | sort -V | tail -n 1; }
[ -n "$source" ] || source=$checkout
[ -n "$source" ] ||
    die "--source is required: a cuttle_tentacle wheel, a folder of wheels or a Cuttle checkout"
packages=()
if [ -f "$source" ] && [[ "$source" == *.whl ]]; then
    protocol=$(newest "$(dirname "$source")" 'cuttle_protocol-*.whl')
    packages=(${protocol:+"$protocol"} "$source")
elif [ -d "$source" ] && [ -n "$(newest "$source" 'cuttle_tentacle-*.whl')" ]; then
    protocol=$(newest "$source" 'cuttle_protocol-*.whl')
    packages=(${protocol:+"$protocol"} "$(newest "$source" 'cuttle_tentacle-*.whl')")
elif [ -f "$source/tentacle/pyproject.toml" ] && [ -f "$source/protos/pyproject.toml" ]; then
    packages=("$source/protos" "$source/tentacle")
elif [ -f "$source/pyproject.toml" ] && [ -f "$source/../protos/pyproject.toml" ]; then
    packages=("$source/../protos" "$source")
else
    die "--source $source: not a cuttle_tentacle wheel, a folder of wheels or a Cuttle checkout"
fi
if [ -d "${packages[0]}" ]; then
    # Build wheels from the checkout first, so what is installed is what a release would ship.
    note "building wheels from ${packages[0]%/*}"
    "${pip[@]}" wheel --quiet --no-deps --wheel-dir "$tmp/wheels" "${packages[@]}" ||
        die "could not build the wheels"
    packages=("$(newest "$tmp/wheels" 'cuttle_protocol-*.whl')"
        "$(newest "$tmp/wheels" 'cuttle_tentacle-*.whl')")
fi
note "installing ${packages[*]##*/} into $prefix"
"${pip[@]}" install --quiet "${packages[@]}" || die "pip install failed"
# The same version number may carry new code (a checkout): replace our two packages anyway.
"${pip[@]}" install --quiet --no-deps --force-reinstall "${packages[@]}" ||
    die "pip install failed"
tentacle="$prefix/bin/tentacle"

"$tentacle" create-instance --home "$home"
if [ "$set_run_as" = 1 ]; then
    # Checked here (the user must exist) before anything is registered.
    "$tentacle" configure --home "$home" --run-scripts-as "$run_scripts_as"
fi
register=(register-with --home "$home" --server "$server" --server-thumbprint "$thumbprint"
    --name "$name" --comms-style "$style" --force)
for env in "${environments[@]}"; do register+=(--environment "$env"); done
for role in "${roles[@]}"; do register+=(--role "$role"); done
if [ "$style" = listening ]; then
    configure=(configure --home "$home" --port "$port")
    [ -z "$listen_host" ] || configure+=(--listen-host "$listen_host")
    "$tentacle" "${configure[@]}"
    [ -z "$public_hostname" ] || register+=(--public-hostname "$public_hostname")
else
    [ -z "$polling_address" ] || register+=(--polling-address "$polling_address")
fi
# Registration fetches the server's certificate, checks the thumbprint and pins it.
"$tentacle" "${register[@]}"

if [ "$service" = 0 ]; then
    note "Tentacle $name is registered; run it with: $tentacle run --home $home"
    exit 0
fi
command -v systemctl >/dev/null 2>&1 || die "systemd not found; rerun with --no-service"
"$tentacle" service install --home "$home"
if [ ! -d /run/systemd/system ]; then
    # An image build, a container or a chroot: the unit is in place for the next boot.
    note "Tentacle $name is registered; systemd is not running here, so the service starts" \
        "at the next boot (systemctl enable cuttle-tentacle)"
    systemctl enable cuttle-tentacle >/dev/null 2>&1 || true
    exit 0
fi
systemctl daemon-reload
systemctl enable --now cuttle-tentacle
systemctl restart cuttle-tentacle
note "Tentacle $name is running (systemctl status cuttle-tentacle)"

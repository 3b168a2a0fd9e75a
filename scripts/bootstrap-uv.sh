# shellcheck shell=bash
# Sourced by scripts/quickstart and scripts/test: put a uv on PATH without touching the system
# Python. Stock Debian 12 / Ubuntu 24.04 refuse `pip install` outside a virtual environment
# (PEP 668) and lack pip and python3-venv, so uv goes into a virtual environment of its own,
# ${XDG_CACHE_HOME:-~/.cache}/cuttle/uv-bootstrap, made by the system's python3 (python3-venv is
# installed with apt first when we are root and it is missing). A virtual environment that is
# active or first on PATH is never used for this. uv then brings Python 3.11+ itself where the
# system's is older (uv sync downloads a uv-managed Python).

# The first python3 on PATH that is a system interpreter, not a virtual environment's.
cuttle_system_python() {
    local dir
    local IFS=:
    for dir in $PATH; do
        [ -x "$dir/python3" ] || continue
        [ -e "$dir/../pyvenv.cfg" ] && continue
        if "$dir/python3" -c 'import sys; sys.exit(sys.prefix != sys.base_prefix)' 2>/dev/null
        then
            echo "$dir/python3"
            return 0
        fi
    done
    return 1
}

cuttle_bootstrap_uv() {
    local tools="${XDG_CACHE_HOME:-$HOME/.cache}/cuttle/uv-bootstrap" python version candidate
    if command -v uv >/dev/null 2>&1; then
        return 0
    fi
    for candidate in "$HOME/.local/bin/uv" "$HOME/.cargo/bin/uv" "$tools/bin/uv"; do
        if [ -x "$candidate" ]; then
            PATH="$(dirname "$candidate"):$PATH"
            export PATH
            return 0
        fi
    done
    python=$(cuttle_system_python) || {
        echo "no python3 found to bootstrap uv: install python3 or uv" >&2
        return 1
    }
    if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
        version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "Installing python$version-venv with apt (to bootstrap uv)..."
            DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$version-venv" \
                    >/dev/null
        fi
        "$python" -c 'import ensurepip, venv' 2>/dev/null || {
            echo "$python cannot make virtual environments: install python$version-venv" \
                "(or uv itself)" >&2
            return 1
        }
    fi
    echo "Installing uv into $tools..."
    (unset VIRTUAL_ENV PIP_USER PIP_PREFIX PIP_TARGET
        "$python" -m venv "$tools" && "$tools/bin/python" -m pip install --quiet uv) || {
        echo "could not install uv into $tools" >&2
        return 1
    }
    PATH="$tools/bin:$PATH"
    export PATH
}

"""Octopus-compatible script helpers and the workspace layout a script runs in.

The workspace gets the script body (``script.sh`` / ``script.py``), the request's files, and a
``.cuttle/`` directory (0700) with a bootstrap, the helpers and ``variables.json`` (0600). The
bootstrap defines ``set_octopusvariable``, ``get_octopusvariable``, ``new_octopusartifact``,
``fail_step`` and ``write_*`` and then runs the script, so existing Octopus scripts run unchanged.
Variables, sensitive ones included, reach the script only through that file, whose path (not a
secret) is in ``CUTTLE_VARIABLES_FILE``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cuttle.tentacle.execution.errors import InvalidScript
from cuttle.tentacle.execution.model import StartCommand, Syntax, check_relative_name
from cuttle.tentacle.execution.tickets import atomic_write

__all__ = ["Launch", "check_files", "prepare_workspace", "remove_variables_file", "script_name"]

# POSIX sh so the same helpers serve bash and sh (dash). printf, not echo: dash's echo expands
# backslashes. Values travel base64-encoded through a pipe, never on a command line.
_SHELL_HELPERS = r"""# Cuttle script helpers (Octopus Deploy compatible); sourced before the script.
__cuttle_b64() {
  if command -v base64 >/dev/null 2>&1; then
    printf '%s' "$1" | base64 | tr -d '\n'
  else
    printf '%s' "$1" | "$CUTTLE_PYTHON" -I -S -c \
      'import base64,sys;sys.stdout.write(base64.b64encode(sys.stdin.buffer.read()).decode())'
  fi
}
set_octopusvariable() {
  __cuttle_sm="##octopus[setVariable name='$(__cuttle_b64 "$1")' value='$(__cuttle_b64 "$2")'"
  case "${3:-}" in
    True|true|TRUE|-sensitive|sensitive) __cuttle_sm="$__cuttle_sm sensitive='VHJ1ZQ=='" ;;
  esac
  printf '%s]\n' "$__cuttle_sm"
}
get_octopusvariable() {
  "$CUTTLE_PYTHON" -I -S -c '
import json, os, sys
with open(os.environ["CUTTLE_VARIABLES_FILE"], encoding="utf-8") as f:
    pairs = json.load(f)
found = None
for name, value in pairs:
    if name == sys.argv[1]:
        found = value
if found is None:
    for name, value in pairs:
        if name.lower() == sys.argv[1].lower():
            found = value
# A trailing newline keeps a service message echoed next on a line of its own; "$(...)" drops it.
sys.stdout.write((found or "") + "\n")
' "$1"
}
new_octopusartifact() {
  case "$1" in
    /*) __cuttle_path="$1" ;;
    *) __cuttle_path="$PWD/$1" ;;
  esac
  __cuttle_name="${2:-$(basename "$1")}"
  __cuttle_len=0
  if [ -f "$__cuttle_path" ]; then __cuttle_len=$(wc -c < "$__cuttle_path" | tr -d ' '); fi
  __cuttle_sm="##octopus[createArtifact path='$(__cuttle_b64 "$__cuttle_path")'"
  __cuttle_sm="$__cuttle_sm name='$(__cuttle_b64 "$__cuttle_name")'"
  printf '%s\n' "$__cuttle_sm length='$(__cuttle_b64 "$__cuttle_len")']"
}
fail_step() {
  if [ -n "${1:-}" ]; then
    printf '%s\n' "##octopus[resultMessage message='$(__cuttle_b64 "$1")']"
  fi
  exit 1
}
__cuttle_write() {
  printf '%s\n' "##octopus[$1]"
  shift
  printf '%s\n' "$*"
  printf '%s\n' "##octopus[stdout-default]"
}
write_highlight() { __cuttle_write stdout-highlight "$@"; }
write_verbose() { __cuttle_write stdout-verbose "$@"; }
write_warning() { __cuttle_write stdout-warning "$@"; }
write_wait() { __cuttle_write stdout-wait "$@"; }
"""

_SHELL_BOOTSTRAP = """# Cuttle bootstrap: load the helpers, then run the script with its arguments.
. "$CUTTLE_HELPERS"
__cuttle_script="$1"
shift
. "$__cuttle_script"
"""

_PYTHON_BOOTSTRAP = r'''"""Cuttle bootstrap: define the Octopus helpers, then run the script."""
import base64 as _base64
import json as _json
import os as _os
import runpy as _runpy
import sys as _sys


def _cuttle_emit(_message, **attributes):
    parts = [_message] + [
        "%s='%s'" % (k, _base64.b64encode(str(v).encode("utf-8")).decode("ascii"))
        for k, v in attributes.items()
    ]
    print("##octopus[" + " ".join(parts) + "]", flush=True)


def _cuttle_load():
    with open(_os.environ["CUTTLE_VARIABLES_FILE"], encoding="utf-8") as f:
        return {name: value for name, value in _json.load(f)}


octopusvariables = _cuttle_load()


def get_octopusvariable(name):
    if name in octopusvariables:
        return octopusvariables[name]
    for key, value in octopusvariables.items():
        if key.lower() == name.lower():
            return value
    raise KeyError(name)


def set_octopusvariable(name, value, sensitive=False):
    if sensitive:
        _cuttle_emit("setVariable", name=name, value=value, sensitive="True")
    else:
        _cuttle_emit("setVariable", name=name, value=value)


def new_octopusartifact(path, name=None):
    path = _os.path.abspath(path)
    length = _os.path.getsize(path) if _os.path.isfile(path) else 0
    _cuttle_emit("createArtifact", path=path, name=name or _os.path.basename(path), length=length)


def fail_step(message=None):
    if message:
        _cuttle_emit("resultMessage", message=message)
    _sys.exit(1)


def _cuttle_write(level, message):
    print("##octopus[%s]" % level, flush=True)
    print(message, flush=True)
    print("##octopus[stdout-default]", flush=True)


def write_highlight(message):
    _cuttle_write("stdout-highlight", message)


def write_verbose(message):
    _cuttle_write("stdout-verbose", message)


def write_warning(message):
    _cuttle_write("stdout-warning", message)


def write_wait(message):
    _cuttle_write("stdout-wait", message)


_cuttle_script = _sys.argv[1]
_sys.argv = _sys.argv[1:]
_sys.path[0] = _os.path.dirname(_os.path.abspath(_cuttle_script))
_runpy.run_path(
    _cuttle_script,
    init_globals={
        "octopusvariables": octopusvariables,
        "get_octopusvariable": get_octopusvariable,
        "set_octopusvariable": set_octopusvariable,
        "new_octopusartifact": new_octopusartifact,
        "fail_step": fail_step,
        "write_highlight": write_highlight,
        "write_verbose": write_verbose,
        "write_warning": write_warning,
        "write_wait": write_wait,
    },
    run_name="__main__",
)
'''


@dataclass(frozen=True)
class Launch:
    """How to start a prepared script: argv, environment and working directory."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    variables_file: Path


def script_name(syntax: Syntax) -> str:
    """The file name the body is written to."""
    return "script.py" if syntax is Syntax.PYTHON else "script.sh"


def check_files(cmd: StartCommand) -> None:
    """Refuse file names that escape the workspace or overwrite the script body."""
    if not isinstance(cmd.syntax, Syntax):
        raise InvalidScript(f"unknown syntax {cmd.syntax!r}")
    body_name = script_name(cmd.syntax)
    for f in cmd.files:
        if check_relative_name(f.name).as_posix() == body_name:
            raise InvalidScript(f"file name {f.name!r} collides with the script body")


def _interpreter(syntax: Syntax, python: str) -> str | None:
    if syntax is Syntax.PYTHON:
        return python if os.access(python, os.X_OK) else None
    return shutil.which("bash" if syntax is Syntax.BASH else "sh")


def prepare_workspace(workspace: Path, ticket: str, cmd: StartCommand, python: str) -> Launch | str:
    """Write the workspace; return how to launch it, or why it cannot start (a str)."""
    interpreter = _interpreter(cmd.syntax, python)
    if interpreter is None:
        return (
            f"no interpreter found for {cmd.syntax.value} (looked for {cmd.syntax.value.lower()})"
        )
    control = workspace / ".cuttle"
    control.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(control, 0o700)
    for f in cmd.files:
        target = workspace / check_relative_name(f.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.content)
    script = workspace / script_name(cmd.syntax)
    script.write_text(cmd.body, encoding="utf-8")
    variables_file = control / "variables.json"
    pairs = [[v.name, v.value] for v in cmd.variables]
    atomic_write(variables_file, json.dumps(pairs).encode(), 0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUTTLE_")}
    env.update(
        CUTTLE_TICKET=ticket,
        CUTTLE_VARIABLES_FILE=str(variables_file),
        CUTTLE_PYTHON=python,
        CUTTLE_WORKSPACE=str(workspace),
        PYTHONUNBUFFERED="1",
    )
    if cmd.syntax is Syntax.PYTHON:
        bootstrap = control / "bootstrap.py"
        bootstrap.write_text(_PYTHON_BOOTSTRAP, encoding="utf-8")
        argv = [interpreter, str(bootstrap), str(script), *cmd.arguments]
    else:
        helpers = control / "helpers.sh"
        helpers.write_text(_SHELL_HELPERS, encoding="utf-8")
        bootstrap = control / "bootstrap.sh"
        bootstrap.write_text(_SHELL_BOOTSTRAP, encoding="utf-8")
        env["CUTTLE_HELPERS"] = str(helpers)
        flags = ["--noprofile", "--norc"] if cmd.syntax is Syntax.BASH else []
        argv = [interpreter, *flags, str(bootstrap), str(script), *cmd.arguments]
    return Launch(argv=argv, env=env, cwd=workspace, variables_file=variables_file)


def remove_variables_file(workspace: Path) -> None:
    """Delete the variables file (it holds secrets) once the script has ended."""
    with contextlib.suppress(FileNotFoundError):
        (workspace / ".cuttle" / "variables.json").unlink()

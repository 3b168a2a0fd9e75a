"""Octopus-compatible script helpers and the workspace layout a script runs in.

The helpers and the bootstraps are written once per Tentacle home, under ``home/helpers/`` with
their content hash in the name, and shared read-only by every script: a ticket's workspace only
gets what is its own, the script body (``script.sh`` / ``script.py``) and the request's files.
The variables go to ``variables.json`` (0600) beside the workspace, in the ticket's own 0700
directory, where no file of the request can collide with it. The bootstrap joins the ticket's
cgroup, defines ``set_octopusvariable``, ``get_octopusvariable``, ``new_octopusartifact``,
``fail_step`` and ``write_*``, waits for the Tentacle's "go" on stdin (see ``release``) and then
runs the script, so existing Octopus scripts run unchanged. Variables, sensitive ones included,
reach the script only through that file, whose path (not a secret) is in
``CUTTLE_VARIABLES_FILE``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cuttle.tentacle.execution.errors import InvalidScript
from cuttle.tentacle.execution.model import StartCommand, Syntax, check_relative_name
from cuttle.tentacle.execution.script_user import ScriptUser, drop_privileges_argv, give_to

__all__ = [
    "HelperFiles",
    "Launch",
    "check_files",
    "plan_launch",
    "release",
    "remove_variables_file",
    "script_name",
    "write_workspace",
]

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

# $1 is the ticket's cgroup.procs ("" without cgroups). The shell moves itself there before
# anything of the script runs, so every process the script forks starts inside, and no separate
# joiner has to be exec'd first. echo is a builtin: the join itself forks nothing. A refused join
# is not fatal: the process group and the CUTTLE_TICKET marker still find the tree.
#
# Then the gate: the script runs only once the Tentacle writes "go" on stdin, which it does when
# the workspace is written and the ticket's claim is on disk (see runner.launch). The
# interpreter starts up meanwhile, so that work costs no time; end of input without "go" (the
# Tentacle gave up or died) means the script must not run at all. Nothing of the workspace but
# its directory is read before "go". The script itself gets /dev/null as stdin, as before.
_GATE_EXIT = 125
_SHELL_BOOTSTRAP = f"""# Cuttle bootstrap: join the cgroup, load the helpers, wait for go, run.
if [ -n "$1" ]; then {{ echo $$ > "$1"; }} 2>/dev/null || :; fi
. "$CUTTLE_HELPERS"
IFS= read -r __cuttle_go || exit {_GATE_EXIT}
[ "$__cuttle_go" = go ] || exit {_GATE_EXIT}
exec </dev/null
shift
__cuttle_script="$1"
shift
. "$__cuttle_script"
"""

_PYTHON_BOOTSTRAP = r'''"""Cuttle bootstrap: join the cgroup, define the helpers, run the script."""
import os as _os
import sys as _sys


def _cuttle_join(procs):
    # Before the script runs, so that everything it starts is inside the cgroup.
    if procs:
        try:
            with open(procs, "w") as f:
                f.write(str(_os.getpid()))
        except OSError:
            pass


_cuttle_join(_sys.argv[1])

import base64 as _base64
import json as _json
import runpy as _runpy


def _cuttle_emit(_message, **attributes):
    parts = [_message] + [
        "%s='%s'" % (k, _base64.b64encode(str(v).encode("utf-8")).decode("ascii"))
        for k, v in attributes.items()
    ]
    print("##octopus[" + " ".join(parts) + "]", flush=True)


def _cuttle_load():
    with open(_os.environ["CUTTLE_VARIABLES_FILE"], encoding="utf-8") as f:
        return {name: value for name, value in _json.load(f)}


# The gate (see the shell bootstrap): the workspace is complete only once "go" has come.
if _sys.stdin.buffer.readline() != b"go\n":
    _sys.exit(_GATE_EXIT)
_cuttle_null = _os.open(_os.devnull, _os.O_RDONLY)
_os.dup2(_cuttle_null, 0)
_os.close(_cuttle_null)
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


_cuttle_script = _sys.argv[2]
_sys.argv = _sys.argv[2:]
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
'''.replace("_GATE_EXIT", str(_GATE_EXIT))


@dataclass(frozen=True)
class Launch:
    """How to start a prepared script: command, environment and working directory.

    The process waits at the bootstrap's gate until ``release`` says go.
    """

    command: list[str]
    """The interpreter with its flags and the bootstrap."""
    arguments: list[str]
    """The script and its arguments, after the cgroup slot."""
    env: dict[str, str]
    cwd: Path
    script: Path
    variables_file: Path
    user: ScriptUser | None = None
    """Who the script runs as (None: as the Tentacle); the workspace is handed to them."""

    def argv(self, cgroup: Path | None) -> list[str]:
        """The full argv; the bootstrap joins ``cgroup`` (when given) before the script runs."""
        join = str(cgroup / "cgroup.procs") if cgroup is not None else ""
        return [*self.command, join, *self.arguments]

    def argv_as_user(self, python: str) -> list[str]:
        """The argv that drops to ``user`` first; the Tentacle joins the cgroup for it."""
        assert self.user is not None  # noqa: S101 - only for a launch with a user
        # The dropper execs the interpreter by path: the command's first word is absolute.
        return [*drop_privileges_argv(python, self.user), *self.command, "", *self.arguments]


def release(gate: IO[bytes], go: bool) -> None:
    """Open the bootstrap's gate (the script runs) or, with ``go`` false, make it exit unrun."""
    try:
        if go:
            gate.write(b"go\n")
        gate.close()
    except BrokenPipeError:
        pass  # the interpreter is already gone; its exit status tells the rest


@dataclass(frozen=True)
class _Installed:
    shell_helpers: Path
    shell_bootstrap: Path
    python_bootstrap: Path


class HelperFiles:
    """The helpers and bootstraps, written once per Tentacle home and shared by every script.

    Each file is named by its content hash, so a Tentacle of another version sharing the home
    writes its own files and never changes one a running script is reading; files are read-only
    so a script cannot change them by accident. The content is checked (and rewritten if it
    differs) once per instance, the first time a script is prepared; nothing is fsynced: after a
    crash the check runs again before any script uses them.
    """

    def __init__(self, directory: Path, *, shared: bool = False) -> None:
        self.directory = directory
        # Shared with scripts that run as another user: they must be able to read them.
        self._shared = shared
        self._lock = threading.Lock()
        self._installed: _Installed | None = None

    def installed(self) -> _Installed:
        """The paths of the shared files, writing them on first use (blocking)."""
        with self._lock:
            if self._installed is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                if self._shared:
                    # Code every script reads, holding nothing secret.
                    os.chmod(self.directory, 0o755)  # noqa: S103
                self._installed = _Installed(
                    shell_helpers=self._install("helpers", ".sh", _SHELL_HELPERS),
                    shell_bootstrap=self._install("bootstrap", ".sh", _SHELL_BOOTSTRAP),
                    python_bootstrap=self._install("bootstrap", ".py", _PYTHON_BOOTSTRAP),
                )
            return self._installed

    def _install(self, stem: str, suffix: str, text: str) -> Path:
        data = text.encode("utf-8")
        path = self.directory / f"{stem}-{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
        with contextlib.suppress(OSError):
            if path.read_bytes() == data:
                return path
        # Unique temporary name: two Tentacles sharing the home may install at the same time.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        _write_new(tmp, data, 0o444)
        os.replace(tmp, path)
        return path


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
    name = "bash" if syntax is Syntax.BASH else "sh"
    key = (name, os.environ.get("PATH"))
    # Walking PATH costs a good part of a short script's start; what was found stays found (a
    # shell removed later fails to start, saying so), what was not is looked for again.
    found = _FOUND.get(key)
    if found is None:
        found = shutil.which(name)
        if found is not None:
            _FOUND[key] = found
    return found


_FOUND: dict[tuple[str, str | None], str] = {}


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # Not fsynced: the variables file lives only as long as the script, nothing reads it before
    # the script starts, and after a crash it is deleted, never read again; the shared helpers
    # are checked again by the next Tentacle before any script uses them.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def plan_launch(
    workspace: Path,
    variables_file: Path,
    ticket: str,
    cmd: StartCommand,
    python: str,
    helpers: HelperFiles,
    user: ScriptUser | None = None,
) -> Launch | str:
    """How to launch the script (nothing is written yet); a str says why not."""
    interpreter = _interpreter(cmd.syntax, python)
    if interpreter is None:
        return (
            f"no interpreter found for {cmd.syntax.value} (looked for {cmd.syntax.value.lower()})"
        )
    shared = helpers.installed()
    script = workspace / script_name(cmd.syntax)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUTTLE_")}
    env.update(
        CUTTLE_TICKET=ticket,
        CUTTLE_VARIABLES_FILE=str(variables_file),
        CUTTLE_PYTHON=python,
        CUTTLE_WORKSPACE=str(workspace),
        # A package's driver runs its Python scripts through the same bootstrap.
        CUTTLE_PYTHON_BOOTSTRAP=str(shared.python_bootstrap),
        PYTHONUNBUFFERED="1",
    )
    if user is not None:
        env.update(user.environment())
    if cmd.syntax is Syntax.PYTHON:
        command = [interpreter, str(shared.python_bootstrap)]
    else:
        env["CUTTLE_HELPERS"] = str(shared.shell_helpers)
        flags = ["--noprofile", "--norc"] if cmd.syntax is Syntax.BASH else []
        command = [interpreter, *flags, str(shared.shell_bootstrap)]
    return Launch(
        command=command,
        arguments=[str(script), *cmd.arguments],
        env=env,
        cwd=workspace,
        script=script,
        variables_file=variables_file,
        user=user,
    )


def write_workspace(launch: Launch, cmd: StartCommand) -> None:
    """Write the request's files, the script body and the variables file into the workspace."""
    workspace = launch.cwd
    for f in cmd.files:
        target = workspace / check_relative_name(f.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.content)
    launch.script.write_text(cmd.body, encoding="utf-8")
    pairs = [[v.name, v.value] for v in cmd.variables]
    _write_new(launch.variables_file, json.dumps(pairs).encode(), 0o600)
    if launch.user is not None:
        # The script's own files (its workspace was made theirs when the ticket was claimed,
        # and nothing of the script runs before "go"): its user may change and delete them.
        give_to(workspace, launch.user)
        os.chown(launch.variables_file, launch.user.uid, launch.user.gid)


def remove_variables_file(variables_file: Path) -> None:
    """Delete the variables file (it holds secrets) once the script has ended."""
    with contextlib.suppress(FileNotFoundError):
        variables_file.unlink()

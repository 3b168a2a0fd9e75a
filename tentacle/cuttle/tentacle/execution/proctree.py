"""Finding and killing a script's whole process tree (Linux).

Two mechanisms, used together:

* cgroup v2 where mounted and writable: each ticket gets a child cgroup; killing it reaches every
  descendant, however it daemonised.
* always: the script's environment carries ``CUTTLE_TICKET=<ticket>``; every process whose
  ``/proc/<pid>/environ`` still has it (a ``setsid`` grandchild inherits it) is signalled along
  with the script's process group.

The functions are blocking; callers run them in a thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

import structlog

__all__ = [
    "CgroupRoot",
    "become_subreaper",
    "find_cgroup2_mount",
    "has_zombie_children",
    "kill_tree",
    "process_start_time",
    "reap_zombies",
    "survivors",
    "tree_pids",
]

log = structlog.get_logger()

_PR_SET_CHILD_SUBREAPER = 36
# Between "signalled" and "confirmed dead" we look at /proc this often; bounded by the grace.
_POLL = 0.02


def become_subreaper() -> bool:
    """Make this process adopt orphaned descendants (so none escapes to init); True on success."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _read_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name may contain spaces and parentheses; fields resume after the last ')'.
    close = raw.rfind(b")")
    return raw[close + 2 :].decode("ascii", "replace").split()


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks); None if the pid is gone."""
    fields = _read_stat(pid)
    # fields[0] is field 3 (state), so field 22 is fields[19].
    if fields is None or len(fields) < 20:
        return None
    return int(fields[19])


def is_alive(pid: int, start_time: int | None) -> bool:
    """Whether ``pid`` is a live (non-zombie) process with the given start time."""
    fields = _read_stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return False
    return start_time is None or int(fields[19]) == start_time


def find_cgroup2_mount() -> Path | None:
    """The cgroup2 mount point from /proc/self/mounts, if any."""
    try:
        mounts = Path("/proc/self/mounts").read_text()
    except OSError:
        return None
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == "cgroup2":
            return Path(parts[1].replace("\\040", " "))
    return None


class CgroupRoot:
    """A writable cgroup v2 directory under which each ticket gets a child cgroup."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def detect(cls, name: str = "cuttle") -> CgroupRoot | None:
        """Create ``<our cgroup>/<name>`` under the cgroup2 mount; None where not possible."""
        mount = find_cgroup2_mount()
        if mount is None:
            return None
        own = "/"
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/cgroup").read_text().splitlines():
                if line.startswith("0::"):
                    own = line[3:]
        path = mount / own.lstrip("/") / name
        try:
            path.mkdir(exist_ok=True)
            probe = path / ".probe"
            probe.mkdir(exist_ok=True)
            probe.rmdir()
        except OSError as exc:
            log.info("cgroup_unavailable", path=str(path), error=str(exc))
            return None
        return cls(path)

    def create(self, ticket: str) -> Path | None:
        """Create the ticket's cgroup; None if that fails (the environ fallback still works)."""
        path = self.path / ticket
        try:
            path.mkdir(exist_ok=True)
        except OSError:
            return None
        return path


def cgroup_pids(cgroup: Path | None) -> set[int]:
    """The pids currently in a cgroup (empty when it is gone)."""
    if cgroup is None:
        return set()
    try:
        return {int(p) for p in (cgroup / "cgroup.procs").read_text().split()}
    except OSError:
        return set()


def _marker_pids(marker: bytes) -> set[int]:
    found: set[int] = set()
    own = os.getpid()
    needle = b"\0" + marker + b"\0"
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read()
        except OSError:
            continue
        if needle in b"\0" + environ:
            found.add(int(entry.name))
    return found


def _group_pids(pgid: int | None) -> set[int]:
    if pgid is None:
        return set()
    found: set[int] = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _read_stat(int(entry.name))
            if fields is not None and fields[0] != "Z" and int(fields[2]) == pgid:
                found.add(int(entry.name))
    return found


def tree_pids(ticket: str, pgid: int | None, cgroup: Path | None) -> set[int]:
    """Every live process that belongs to a ticket's tree, by all three criteria."""
    pids = (
        _marker_pids(f"CUTTLE_TICKET={ticket}".encode()) | _group_pids(pgid) | cgroup_pids(cgroup)
    )
    return {p for p in pids if is_alive(p, None)}


def _signal_all(pids: Iterable[int], pgid: int | None, sig: signal.Signals) -> None:
    if pgid is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def kill_tree(
    ticket: str,
    pgid: int | None,
    cgroup: Path | None,
    grace: float,
    keep: int | None = None,
) -> set[int]:
    """SIGTERM the tree, SIGKILL what is left after ``grace``; return once nothing is alive.

    Returns every pid that was signalled, so the caller can reap those it adopted. ``keep`` is a
    pid reaped elsewhere (the script's main process) that must not count as "still alive" once it
    is a zombie.
    """
    seen = tree_pids(ticket, pgid, cgroup)
    _signal_all(seen, pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        alive = tree_pids(ticket, pgid, cgroup)
        seen |= alive
        if not alive:
            break
        _signal_all(alive, None, signal.SIGTERM)  # late forks get the polite signal too
        time.sleep(_POLL)
    # SIGKILL rounds until the tree is empty: a forking process can add members between scans.
    # cgroup.kill freezes-and-kills the whole cgroup atomically where the kernel has it.
    for _ in range(200):
        if cgroup is not None:
            with contextlib.suppress(OSError):
                (cgroup / "cgroup.kill").write_text("1")
        alive = tree_pids(ticket, pgid, cgroup)
        seen |= alive
        if not alive:
            break
        _signal_all(alive, pgid, signal.SIGKILL)
        time.sleep(_POLL)
    else:
        log.warning("process_tree_survived_kill", ticket=ticket, pids=sorted(alive))
    seen.discard(keep if keep is not None else -1)
    return seen


def survivors(ticket: str, pgid: int | None, cgroup: Path | None, keep: int | None) -> set[int]:
    """What is still alive of a tree that kill_tree gave up on (empty: it is all gone)."""
    return tree_pids(ticket, pgid, cgroup) - {keep if keep is not None else -1}


def remove_cgroup(cgroup: Path | None) -> None:
    """Remove a ticket's cgroup once it is empty; silently keep it otherwise."""
    if cgroup is not None:
        with contextlib.suppress(OSError):
            cgroup.rmdir()


def has_zombie_children() -> bool:
    """Whether any child of ours has exited and waits to be reaped (one syscall, reaps nothing)."""
    try:
        found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return found is not None


def reap_zombies(pids: Iterable[int], sessions: Iterable[int] = ()) -> int:
    """Reap zombie children of ours (adopted as subreaper) that are in ``pids`` or ``sessions``.

    Only processes known to belong to a script are reaped: a blanket ``waitpid(-1)`` would steal
    the exit status of children that other code is waiting for.
    """
    # Scanning /proc costs about a millisecond; most scripts leave no orphan behind.
    if not has_zombie_children():
        return 0
    wanted = set(pids)
    wanted_sessions = set(sessions)
    reaped = 0
    own = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        fields = _read_stat(pid)
        if fields is None or fields[0] != "Z" or int(fields[1]) != own:
            continue
        if pid not in wanted and int(fields[3]) not in wanted_sessions:
            continue
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                reaped += 1
    return reaped

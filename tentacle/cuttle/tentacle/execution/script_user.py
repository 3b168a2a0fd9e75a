"""The user scripts run as (`run_scripts_as`), and keeping them away from the Tentacle's files.

By default scripts run as the Tentacle itself (root for the installed service), so scripts
written for Octopus that need root run unchanged. With ``run_scripts_as = "user[:group]"`` each
script's process gets that user's uid, primary gid (or the group named), supplementary groups
(as initgroups gives them) and HOME/USER/LOGNAME, after the Tentacle has put it into its
ticket's cgroup: an unprivileged process cannot write a cgroup.procs outside its own subtree,
so it cannot leave, and cancel still reaches every process it starts.

The home (0700) is out of the script's reach: its workspace and variables file live under the
workspaces directory (``/var/lib/cuttle-tentacle-workspaces/<home name>-<hash of its path>``
unless ``workspaces_dir`` says otherwise; not beside the home, which may sit in a directory the
user cannot enter, as a server's built-in worker does), where every directory but the workspace
itself is root-owned and not listable.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path, PurePath

__all__ = [
    "ScriptUser",
    "ScriptUserError",
    "check_reachable",
    "check_workspaces",
    "check_run_scripts_as",
    "drop_privileges_argv",
    "give_to",
    "open_beneath",
    "resolve_script_user",
    "script_user_for",
    "workspaces_root",
]

DEFAULT_WORKSPACES = Path("/var/lib/cuttle-tentacle-workspaces")


class ScriptUserError(ValueError):
    """run_scripts_as names nobody, or this Tentacle cannot switch to that user."""


@dataclass(frozen=True)
class ScriptUser:
    """Who a script runs as: ids and the login environment of that user."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    def environment(self) -> dict[str, str]:
        """HOME, USER and LOGNAME as a login of this user would have them."""
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name}


def check_run_scripts_as(value: str) -> tuple[str, str]:
    """Split "user" or "user:group" into (user, group or ""); a ValueError names what is wrong."""
    if value != value.strip() or any(c.isspace() for c in value):
        raise ValueError(f"run_scripts_as {value!r}: a user name has no white space")
    user, sep, group = value.partition(":")
    if not user:
        raise ValueError(f"run_scripts_as {value!r}: expected USER or USER:GROUP")
    if sep and (not group or ":" in group):
        raise ValueError(f"run_scripts_as {value!r}: expected USER or USER:GROUP")
    return user, group


def resolve_script_user(value: str) -> ScriptUser | None:
    """Look the user (and group) up; None for ""; ScriptUserError for unknown names."""
    if not value:
        return None
    try:
        user_name, group_name = check_run_scripts_as(value)
    except ValueError as exc:
        raise ScriptUserError(str(exc)) from exc
    try:
        entry = pwd.getpwuid(int(user_name)) if user_name.isdigit() else pwd.getpwnam(user_name)
    except KeyError:
        raise ScriptUserError(
            f"run_scripts_as {value!r}: there is no user {user_name!r} on this machine"
        ) from None
    gid = entry.pw_gid
    if group_name:
        try:
            gid = (
                grp.getgrgid(int(group_name)).gr_gid
                if group_name.isdigit()
                else grp.getgrnam(group_name).gr_gid
            )
        except KeyError:
            raise ScriptUserError(
                f"run_scripts_as {value!r}: there is no group {group_name!r} on this machine"
            ) from None
    # What initgroups(3) would set: the user's groups from the group database, plus the gid.
    groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, gid))))
    return ScriptUser(entry.pw_name, entry.pw_uid, gid, groups, entry.pw_dir or "/")


def script_user_for(value: str) -> ScriptUser | None:
    """The user to switch scripts to, or None to run them as the Tentacle itself.

    A Tentacle that is not root can only run scripts as itself: naming itself is a no-op,
    naming anyone else is refused (it could neither switch users nor keep them in a cgroup).
    """
    user = resolve_script_user(value)
    if user is None:
        return None
    euid = os.geteuid()
    if euid == 0:
        # Naming root itself changes nothing either: no switch, the home layout stays.
        return None if user.uid == 0 else user
    if user.uid == euid:
        return None
    try:
        me = pwd.getpwuid(euid).pw_name
    except KeyError:
        me = str(euid)
    raise ScriptUserError(
        f"run_scripts_as {value!r}: this Tentacle runs as {me} (uid {euid}), not root, so it "
        f"cannot run scripts as {user.name}; run the Tentacle as root, or clear the setting "
        '(tentacle configure --run-scripts-as "")'
    )


# Run by the Tentacle's own Python, as root, in front of the script's interpreter: sets the
# groups, gid and uid for good (real, effective and saved), then execs. Popen could do this
# itself, but only with fork() instead of vfork(), and a fork of the threaded, gRPC-serving
# Tentacle can abort in the child (gRPC's fork handlers).
_DROP = (
    "import os,sys\n"
    "uid,gid,groups=sys.argv[1:4]\n"
    "os.setgroups([int(g) for g in groups.split(',') if g])\n"
    "os.setgid(int(gid))\n"
    "os.setuid(int(uid))\n"
    "os.execv(sys.argv[4],sys.argv[4:])\n"
)


def drop_privileges_argv(python: str, user: ScriptUser) -> list[str]:
    """The command prefix that runs what follows it as ``user`` (the process keeps its pid)."""
    groups = ",".join(str(g) for g in user.groups)
    return [python, "-I", "-S", "-c", _DROP, str(user.uid), str(user.gid), groups]


def workspaces_root(home: Path, configured: str) -> Path:
    """Where scripts run as another user get their workspaces: the setting, or one directory
    per home under /var/lib/cuttle-tentacle-workspaces (named and hashed by the home's path)."""
    if configured:
        return Path(configured).absolute()
    home = home.absolute()
    digest = hashlib.sha256(str(home).encode()).hexdigest()[:12]
    return DEFAULT_WORKSPACES / f"{home.name}-{digest}"


def _may(st: os.stat_result, user: ScriptUser, bits: tuple[int, int, int]) -> bool:
    if user.uid == 0:
        return True
    if st.st_uid == user.uid:
        return bool(st.st_mode & bits[0])
    if st.st_gid in user.groups:
        return bool(st.st_mode & bits[1])
    return bool(st.st_mode & bits[2])


def check_reachable(path: Path, user: ScriptUser) -> None:
    """Refuse when ``user`` cannot traverse every directory down to ``path`` (by mode bits)."""
    current = Path("/")
    for part in path.absolute().parts[1:]:
        current = current / part
        try:
            st = os.stat(current)
        except FileNotFoundError:
            return  # made by the Tentacle below an ancestor already checked
        if not _may(st, user, (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)):
            raise ScriptUserError(
                f"run_scripts_as: user {user.name} cannot reach {path}: {current} is mode "
                f"{stat.S_IMODE(st.st_mode):04o} owned by uid {st.st_uid}; choose a workspaces "
                "directory the user can reach (tentacle configure --workspaces-dir DIR)"
            )


def check_workspaces(path: Path, user: ScriptUser) -> None:
    """Refuse a workspaces directory the user cannot reach, or one anyone else could change.

    Root creates, renames and deletes ticket directories in it: were it (or a directory
    above it) someone else's or writable by others, its entries could be swapped for
    symlinks pointing root's writes elsewhere.
    """
    check_reachable(path, user)
    euid = os.geteuid()
    # Symlinks on the way are followed once, here (their own directories are checked as the
    # real path's are not: a root-owned link in a root-owned directory cannot be changed).
    target = Path(os.path.realpath(path))
    current = target
    while True:
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            current = current.parent  # made by the Tentacle
            continue
        # A sticky directory (/tmp) above it lets others add entries, never replace ours.
        shared = st.st_mode & stat.S_ISVTX and current != target
        if st.st_uid not in (0, euid) or (st.st_mode & 0o022 and not shared):
            raise ScriptUserError(
                f"run_scripts_as: the workspaces directory {path} is not safe: {current} is "
                f"mode {stat.S_IMODE(st.st_mode):04o} owned by uid {st.st_uid}; it and the "
                "directories above it must be root's and writable by root alone"
            )
        if current.parent == current:
            return
        current = current.parent


def may_execute(path: str, user: ScriptUser) -> bool:
    """Whether ``user`` can reach and run ``path`` (the Tentacle's Python, for the helpers)."""
    try:
        check_reachable(Path(path).resolve().parent, user)
        return _may(os.stat(path), user, (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH))
    except (ScriptUserError, OSError):
        return False


def give_to(path: Path, user: ScriptUser) -> None:
    """Hand a directory tree the Tentacle wrote to ``user`` (never following a symlink)."""
    os.chown(path, user.uid, user.gid, follow_symlinks=False)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.uid, user.gid, follow_symlinks=False)


def open_beneath(root: Path, relative: PurePath) -> int:
    """Open a regular file below ``root`` without following any symlink (a race-free read).

    The workspace belongs to the script's user, who could swap a checked path for a symlink
    to a file only root may read; walking it one directory descriptor at a time, each opened
    with O_NOFOLLOW, leaves no such window.
    """
    parts = relative.parts
    if not parts or relative.is_absolute() or ".." in parts:
        raise OSError(f"{relative} is not a path inside the workspace")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            next_fd = os.open(
                part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
            )
            os.close(fd)
            fd = next_fd
        file_fd = os.open(
            parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd
        )
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):
        os.close(file_fd)
        raise OSError(f"{relative} is not a regular file")
    with contextlib.suppress(OSError):
        os.set_blocking(file_fd, True)
    return file_fd

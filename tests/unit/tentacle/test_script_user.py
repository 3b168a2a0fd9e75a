"""Parsing and checking of run_scripts_as, and the helpers that keep scripts in their place."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest

from cuttle.tentacle.config import ConfigError, InstanceHome, TentacleConfig
from cuttle.tentacle.execution import script_user
from cuttle.tentacle.execution.script_user import (
    ScriptUser,
    ScriptUserError,
    check_reachable,
    check_run_scripts_as,
    check_workspaces,
    open_beneath,
    resolve_script_user,
    script_user_for,
    workspaces_root,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("deploy", ("deploy", "")),
        ("deploy:www-data", ("deploy", "www-data")),
        ("1001", ("1001", "")),
    ],
)
def test_user_and_group_are_split(value: str, expected: tuple[str, str]) -> None:
    assert check_run_scripts_as(value) == expected


@pytest.mark.parametrize("value", [":group", "user:", "a:b:c", " deploy", "de ploy", "deploy\n"])
def test_malformed_values_are_refused_with_the_value(value: str) -> None:
    with pytest.raises(ValueError, match="run_scripts_as"):
        check_run_scripts_as(value)


def test_empty_means_the_tentacle_itself() -> None:
    assert resolve_script_user("") is None
    assert script_user_for("") is None


def test_an_unknown_user_or_group_is_named() -> None:
    with pytest.raises(ScriptUserError, match="no user 'no-such-user-x1'"):
        resolve_script_user("no-such-user-x1")
    root = pwd.getpwuid(0).pw_name
    with pytest.raises(ScriptUserError, match="no group 'no-such-group-x1'"):
        resolve_script_user(f"{root}:no-such-group-x1")


def test_a_known_user_resolves_with_its_groups_and_login_environment() -> None:
    root = pwd.getpwuid(0)
    user = resolve_script_user(root.pw_name)
    assert user is not None
    assert (user.uid, user.gid, user.name) == (0, root.pw_gid, root.pw_name)
    assert root.pw_gid in user.groups
    assert user.environment() == {
        "HOME": root.pw_dir,
        "USER": root.pw_name,
        "LOGNAME": root.pw_name,
    }
    by_id = resolve_script_user("0:0")
    assert by_id is not None
    assert (by_id.uid, by_id.gid) == (0, 0)


def test_naming_the_tentacles_own_user_changes_nothing() -> None:
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert script_user_for(me) is None


def test_a_tentacle_that_is_not_root_refuses_another_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    other = pwd.getpwuid(0).pw_name
    monkeypatch.setattr(script_user.os, "geteuid", lambda: 4242)
    with pytest.raises(ScriptUserError, match="not root") as caught:
        script_user_for(other)
    assert "--run-scripts-as" in str(caught.value)


def test_workspaces_default_to_one_directory_per_home_under_var_lib(tmp_path: Path) -> None:
    # Not beside the home: a home may sit where the user cannot go (a server's worker).
    one = workspaces_root(tmp_path / "a" / "home", "")
    other = workspaces_root(tmp_path / "b" / "home", "")
    assert one.parent == other.parent == Path("/var/lib/cuttle-tentacle-workspaces")
    assert one.name.startswith("home-")
    assert one != other
    assert workspaces_root(tmp_path / "a" / "home", "") == one
    assert workspaces_root(tmp_path / "home", "/srv/work") == Path("/srv/work")


def test_an_unreachable_directory_is_named() -> None:
    # Not under tmp_path: pytest's own temp root is 0700, closed to everyone but its owner.
    base = Path(tempfile.mkdtemp(prefix="cuttle-reach-", dir="/tmp"))
    try:
        base.chmod(0o711)
        closed = base / "closed"
        closed.mkdir(mode=0o700)
        closed.chmod(0o700)
        nobody = ScriptUser("someone", 4242, 4242, (4242,), "/")
        with pytest.raises(ScriptUserError, match=f"{closed} is mode 0700") as caught:
            check_reachable(closed / "work", nobody)
        assert "--workspaces-dir" in str(caught.value)
        closed.chmod(0o711)
        check_reachable(closed / "work", nobody)
        # Group members pass by the group bits.
        closed.chmod(0o710)
        if os.geteuid() == 0:
            os.chown(closed, 0, 4243)
            check_reachable(closed / "work", ScriptUser("member", 4242, 4242, (4242, 4243), "/"))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_open_beneath_reads_files_and_refuses_symlinks(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "file.txt").write_text("inside")
    secret = tmp_path.parent / f"{tmp_path.name}-secret"
    secret.write_text("outside")
    (tmp_path / "link.txt").symlink_to(secret)
    (tmp_path / "linkdir").symlink_to(tmp_path / "sub")
    fd = open_beneath(tmp_path, Path("sub/file.txt"))
    with os.fdopen(fd, "rb") as f:
        assert f.read() == b"inside"
    for bad in ("link.txt", "linkdir/file.txt", "sub", "../x", "missing"):
        with pytest.raises(OSError, match=r"."):
            os.close(open_beneath(tmp_path, Path(bad)))


def test_the_config_file_checks_the_form(tmp_path: Path) -> None:
    home = InstanceHome(tmp_path)
    home.save(TentacleConfig(run_scripts_as="deploy:www-data", workspaces_dir="/srv/work"))
    loaded = home.load()
    assert (loaded.run_scripts_as, loaded.workspaces_dir) == ("deploy:www-data", "/srv/work")
    # The user need not exist to load the file: that is checked by configure and at start.
    home.save(TentacleConfig(run_scripts_as="no-such-user-x1"))
    assert home.load().run_scripts_as == "no-such-user-x1"
    for bad, message in (
        ({"run_scripts_as": 1000}, "run_scripts_as must be a string"),
        ({"run_scripts_as": "a:b:c"}, "expected USER or USER:GROUP"),
        ({"workspaces_dir": "relative"}, "workspaces_dir must be an absolute path"),
    ):
        home.config_path.write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match=message) as caught:
            home.load()
        assert str(home.config_path) in str(caught.value)


def test_a_workspaces_directory_others_could_change_is_refused() -> None:
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    base = Path(tempfile.mkdtemp(prefix="cuttle-ws-", dir="/tmp"))
    someone = ScriptUser("someone", 4242, 4242, (4242,), "/")
    try:
        base.chmod(0o711)
        work = base / "workspaces"
        check_workspaces(work, someone)  # not made yet: the Tentacle makes it, root's
        work.mkdir()
        os.chown(work, 4242, 4242)
        with pytest.raises(ScriptUserError, match="owned by uid 4242"):
            check_workspaces(work, someone)
        os.chown(work, 0, 0)
        work.chmod(0o771)
        with pytest.raises(ScriptUserError, match="mode 0771"):
            check_workspaces(work, someone)
        work.chmod(0o711)
        check_workspaces(work, someone)
        # A symlink to it is judged by where it leads.
        (base / "link").symlink_to(work)
        check_workspaces(base / "link", someone)
    finally:
        shutil.rmtree(base, ignore_errors=True)

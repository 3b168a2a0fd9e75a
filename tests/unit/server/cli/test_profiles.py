"""The profile file: where it lives, and that a file others can read is not used."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cuttle.server.cli import profiles


def test_a_profiles_file_others_can_read_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    path = profiles.save_profile("default", profiles.Profile("https://h:8443", "AB" * 32, "K"))
    assert path == tmp_path / "cuttle" / "profiles.json"
    assert profiles.load_profiles()["default"].api_key == "K"
    os.chmod(path, 0o644)
    with pytest.raises(profiles.ProfileError, match="readable by other users"):
        profiles.load_profiles()


def test_a_relative_xdg_config_home_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")
    assert profiles.config_dir() == Path.home() / ".config" / "cuttle"

"""The default instance home: /var/lib/cuttle-tentacle, unless an older install's home exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from cuttle.tentacle import cli


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    new, legacy = tmp_path / "var-lib", tmp_path / "etc"
    monkeypatch.setattr(cli, "DEFAULT_HOME", str(new))
    monkeypatch.setattr(cli, "LEGACY_HOME", str(legacy))
    monkeypatch.delenv("CUTTLE_TENTACLE_HOME", raising=False)
    return new, legacy


def test_a_new_machine_gets_the_var_lib_home(places: tuple[Path, Path]) -> None:
    new, _ = places
    assert cli.default_home() == str(new)


def test_an_existing_home_in_etc_keeps_working(places: tuple[Path, Path]) -> None:
    new, legacy = places
    legacy.mkdir()
    (legacy / "tentacle.json").write_text("{}")
    assert cli.default_home() == str(legacy)
    # Once there is an instance in the new place, it wins.
    new.mkdir()
    (new / "tentacle.json").write_text("{}")
    assert cli.default_home() == str(new)


def test_the_environment_names_the_home(
    places: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CUTTLE_TENTACLE_HOME", str(tmp_path / "mine"))
    assert cli.default_home() == str(tmp_path / "mine")

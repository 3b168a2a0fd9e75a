"""Install paths (Octopus's rule, with _N on redeploy) and retention of extracted versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from cuttle.tentacle.packages.errors import PackageError
from cuttle.tentacle.packages.retention import (
    apply_retention,
    default_applications_directory,
    extracted_versions,
    install_path,
)


def test_install_path_follows_the_octopus_layout(tmp_path: Path) -> None:
    apps = default_applications_directory(tmp_path)
    assert apps == tmp_path / "Applications"
    assert install_path(apps, "Production", "Web", "1.4.0") == apps / "Production/Web/1.4.0"
    assert (
        install_path(apps, "Production", "Web", "1.4.0", tenant="Acme Ltd")
        == apps / "Acme Ltd/Production/Web/1.4.0"
    )


def test_redeploying_a_version_gets_a_numbered_folder(tmp_path: Path) -> None:
    first = install_path(tmp_path, "Test", "web", "2.0.0")
    first.mkdir(parents=True)
    second = install_path(tmp_path, "Test", "web", "2.0.0")
    assert second.name == "2.0.0_1"
    second.mkdir()
    assert install_path(tmp_path, "Test", "web", "2.0.0").name == "2.0.0_2"


def test_names_cannot_escape_or_nest(tmp_path: Path) -> None:
    assert install_path(tmp_path, "Prod/EU", "a\\b", "1.0").relative_to(tmp_path).parts == (
        "Prod_EU",
        "a_b",
        "1.0",
    )
    with pytest.raises(PackageError, match="environment '..' cannot be used"):
        install_path(tmp_path, "..", "web", "1.0")
    with pytest.raises(PackageError, match="version ''"):
        install_path(tmp_path, "Prod", "web", "")


def _extracted(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "Prod" / "web" / name
    path.mkdir(parents=True)
    (path / "file.txt").write_text(name)
    return path


def test_retention_keeps_the_most_recent_and_never_the_current_one(tmp_path: Path) -> None:
    oldest = _extracted(tmp_path, "1.0.0")  # the one deployed right now (a rollback)
    _extracted(tmp_path, "1.10.0-beta")
    _extracted(tmp_path, "1.1.0")
    _extracted(tmp_path, "1.2.0")
    newest = _extracted(tmp_path, "1.2.0_1")
    (tmp_path / "Prod" / "web" / ".1.3.0.extracting-abcd").mkdir()
    names = [v.path.name for v in extracted_versions(tmp_path, "Prod", "web")]
    assert names == ["1.10.0-beta", "1.2.0_1", "1.2.0", "1.1.0", "1.0.0"]
    removed = apply_retention(tmp_path, "Prod", "web", keep=3, current=oldest)
    assert [p.name for p in removed] == ["1.1.0"]
    remaining = sorted(p.name for p in (tmp_path / "Prod" / "web").iterdir())
    assert remaining == [".1.3.0.extracting-abcd", "1.0.0", "1.10.0-beta", "1.2.0", "1.2.0_1"]
    removed = apply_retention(tmp_path, "Prod", "web", keep=1, current=newest, protect=[oldest])
    assert [p.name for p in removed] == ["1.2.0"]


def test_retention_removes_read_only_folders_a_package_brought(tmp_path: Path) -> None:
    old = _extracted(tmp_path, "1.0.0")
    (old / "locked").mkdir()
    (old / "locked" / "f").write_text("x")
    (old / "locked").chmod(0o555)
    _extracted(tmp_path, "2.0.0")
    assert apply_retention(tmp_path, "Prod", "web", keep=1) == [old]
    assert not old.exists()


def test_retention_of_nothing_and_bad_settings(tmp_path: Path) -> None:
    assert apply_retention(tmp_path, "Prod", "none") == []
    with pytest.raises(PackageError, match="at least 1"):
        apply_retention(tmp_path, "Prod", "web", keep=0)

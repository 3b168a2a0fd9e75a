"""`tentacle package-cache list|clear`: listing beside a running agent, clearing only without."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from click.testing import CliRunner

from cuttle.tentacle.cli import main
from cuttle.tentacle.config import InstanceHome
from cuttle.tentacle.home_lock import HomeLock
from cuttle.tentacle.packages.cache import PackageCache, cache_root


def _home_with_package(tmp_path: Path) -> tuple[Path, str]:
    home = tmp_path / "tentacle"
    InstanceHome(home).create()
    cache = PackageCache(cache_root(home))
    content = b"package bytes" * 100
    incoming = cache.incoming / "t"
    incoming.write_bytes(content)
    sha = hashlib.sha256(content).hexdigest()
    cache.add(incoming, "Web", "1.4.0", sha)
    return home, sha


def test_list_shows_the_cached_packages_in_text_and_json(tmp_path: Path) -> None:
    home, sha = _home_with_package(tmp_path)
    runner = CliRunner()
    text = runner.invoke(main, ["package-cache", "list", "--home", str(home)])
    assert text.exit_code == 0, text.output
    assert "Web" in text.output
    assert "1.4.0" in text.output
    assert sha[:16] in text.output
    assert "1 packages, 1,300 bytes" in text.output
    listed = runner.invoke(main, ["package-cache", "list", "--home", str(home), "--output", "json"])
    document = json.loads(listed.output)
    assert [(p["package_id"], p["version"], p["sha256"]) for p in document["packages"]] == [
        ("Web", "1.4.0", sha)
    ]
    # a listing never tidies the folder under a running agent
    with HomeLock(home, "run"):
        assert runner.invoke(main, ["package-cache", "list", "--home", str(home)]).exit_code == 0


def test_clear_empties_the_cache_and_is_refused_while_the_tentacle_runs(tmp_path: Path) -> None:
    home, sha = _home_with_package(tmp_path)
    runner = CliRunner()
    with HomeLock(home, "run"):
        refused = runner.invoke(main, ["package-cache", "clear", "--home", str(home)])
    assert refused.exit_code == 1
    assert "cannot clear the package cache" in refused.output
    assert (cache_root(home) / sha).exists()
    cleared = runner.invoke(main, ["package-cache", "clear", "--home", str(home)])
    assert cleared.exit_code == 0, cleared.output
    assert "Removed 1 packages (1,300 bytes)." in cleared.output
    assert not (cache_root(home) / sha).exists()
    empty = runner.invoke(main, ["package-cache", "list", "--home", str(home)])
    assert "The package cache is empty." in empty.output


def test_list_without_an_instance_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["package-cache", "list", "--home", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "has no instance" in result.output

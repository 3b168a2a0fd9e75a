"""The package cache: verified adds, LRU eviction that spares held packages, room checks."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import pytest

from cuttle.tentacle.packages.cache import PackageCache, cache_root, version_key
from cuttle.tentacle.packages.errors import (
    NotEnoughSpace,
    PackageError,
    PackageHashMismatch,
    PackageInUse,
)


class Clock:
    """A clock that moves one second per reading."""

    def __init__(self) -> None:
        self.ticks = itertools.count(1000)

    def __call__(self) -> float:
        return float(next(self.ticks))


def _incoming(cache: PackageCache, content: bytes) -> tuple[Path, str]:
    path = cache.incoming / f"t-{hashlib.md5(content).hexdigest()}"  # noqa: S324 - a name
    path.write_bytes(content)
    return path, hashlib.sha256(content).hexdigest()


def _cache(tmp_path: Path, **kwargs: object) -> PackageCache:
    return PackageCache(cache_root(tmp_path), clock=Clock(), **kwargs)  # type: ignore[arg-type]


def test_add_verifies_moves_in_and_indexes(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    path, sha = _incoming(cache, b"package bytes")
    entry = cache.add(path, "Web", "1.4.0", sha.upper())
    assert cache.root == tmp_path / "files" / "packages"
    assert not path.exists()
    assert cache.has(sha)
    assert cache.path_of(sha).read_bytes() == b"package bytes"
    assert (entry.package_id, entry.version, entry.size) == ("Web", "1.4.0", 13)
    index = json.loads((cache.root / "index.json").read_text())
    assert index["packages"][0]["sha256"] == sha
    # a second instance over the same folder sees the same cache
    assert PackageCache(cache.root).get(sha) is not None


def test_wrong_hash_is_refused_and_nothing_is_cached(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    path, _ = _incoming(cache, b"corrupt")
    with pytest.raises(PackageHashMismatch, match="expected 0{64}; it was not cached"):
        cache.add(path, "Web", "1.0.0", "0" * 64)
    assert cache.packages() == []


def test_adding_the_same_content_twice_stores_it_once(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    path, sha = _incoming(cache, b"same")
    cache.add(path, "Web", "1.0.0", sha)
    again, _ = _incoming(cache, b"same")
    cache.add(again, "Web", "1.0.0", sha)
    assert len(cache.packages()) == 1
    assert not again.exists()


def test_latest_version_is_the_highest_semver_or_nuget_version(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    for version in ["1.10.0", "1.9.0", "2.0.0-beta.2", "1.10.0.1", "2.0.0-beta.10"]:
        path, sha = _incoming(cache, version.encode())
        cache.add(path, "web", version, sha)
    other, sha = _incoming(cache, b"other")
    cache.add(other, "api", "9.0.0", sha)
    latest = cache.latest_version_of("Web")
    assert latest is not None
    assert latest.version == "2.0.0-beta.10"
    assert cache.latest_version_of("missing") is None


def test_version_order() -> None:
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta", "1.0.0", "1.0.0.1", "1.2.0", "1.10.0"]
    assert sorted(reversed(ordered), key=version_key) == ordered


def test_size_limit_evicts_least_recently_used_but_never_a_held_package(tmp_path: Path) -> None:
    cache = _cache(tmp_path, max_bytes=250)
    shas = []
    for n in range(2):
        path, sha = _incoming(cache, bytes([n]) * 100)
        cache.add(path, "web", f"1.0.{n}", sha)
        shas.append(sha)
    with cache.hold(shas[0]):  # the oldest, but in use
        assert cache.in_use(shas[0])
        path, sha = _incoming(cache, b"\x09" * 100)
        cache.add(path, "web", "1.0.2", sha)
        assert cache.has(shas[0])
        assert not cache.has(shas[1])
        assert not cache.path_of(shas[1]).exists()
        with pytest.raises(PackageInUse, match="in use"):
            cache.remove(shas[0])
        assert [p.sha256 for p in cache.clear()] == [sha]
    assert not cache.in_use(shas[0])
    cache.remove(shas[0])
    assert cache.packages() == []


def test_ensure_room_evicts_then_refuses_with_the_figures(tmp_path: Path) -> None:
    free = {"bytes": 1000}
    cache = _cache(tmp_path, min_free_bytes=100, free_bytes=lambda _: free["bytes"])
    path, sha = _incoming(cache, b"x" * 500)
    cache.add(path, "web", "1.0.0", sha)
    cache.ensure_room(800)  # fits: 1000 - 800 >= 100
    free["bytes"] = 500
    with cache.hold(sha), pytest.raises(NotEnoughSpace, match="500 bytes free, 100 must stay"):
        cache.ensure_room(800)
    assert cache.has(sha)

    def freed(_: Path) -> int:
        return free["bytes"] + (0 if cache.has(sha) else 500)

    cache._free_bytes = freed
    cache.ensure_room(800)  # evicting the unheld package makes room
    assert not cache.has(sha)
    assert NotEnoughSpace.kind == "disk_full"


def test_restart_drops_files_without_index_entries_and_entries_without_files(
    tmp_path: Path,
) -> None:
    cache = _cache(tmp_path)
    kept_path, kept = _incoming(cache, b"kept")
    cache.add(kept_path, "web", "1.0.0", kept)
    lost_path, lost = _incoming(cache, b"lost")
    cache.add(lost_path, "web", "1.0.1", lost)
    cache.path_of(lost).unlink()
    orphan = cache.root / hashlib.sha256(b"orphan").hexdigest()
    orphan.write_bytes(b"orphan")
    partial = cache.incoming / "transfer.part"
    partial.write_bytes(b"half")
    reopened = PackageCache(cache.root)
    assert [p.sha256 for p in reopened.packages()] == [kept]
    assert not orphan.exists()
    assert not partial.exists()


def test_unreadable_index_starts_empty(tmp_path: Path) -> None:
    root = cache_root(tmp_path)
    root.mkdir(parents=True)
    (root / "index.json").write_text("{not json")
    assert PackageCache(root).packages() == []


def test_bad_hash_names_are_refused(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    with pytest.raises(PackageError, match="not a SHA-256"):
        cache.path_of("../../etc/passwd")
    with pytest.raises(PackageError, match="not in the cache"):
        cache.pin("a" * 64)

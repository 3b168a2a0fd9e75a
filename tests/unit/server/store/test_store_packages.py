"""The built-in feed over a real database (SQLite and PostgreSQL) and a real package root."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound
from cuttle.server.packages import feed as feed_module
from cuttle.server.packages.feed import PackageFeed, PushEnd, PushHeader
from cuttle.server.store import documents as doc_store
from cuttle.server.store import packages as package_store
from cuttle.server.store.models import Document, Event, Release
from cuttle.server.store.records import now_ms
from cuttle.server.store.transactions import Transactions

CHUNK = 256 * 1024


def content(seed: str, size: int = 3 * CHUNK + 17) -> bytes:
    block = hashlib.sha256(seed.encode()).digest()
    return (block * (size // len(block) + 1))[:size]


async def stream(
    data: bytes, *, trailer: bool = True, sha256: str = ""
) -> AsyncIterator[bytes | PushEnd]:
    for start in range(0, len(data), CHUNK):
        yield data[start : start + CHUNK]
    if trailer:
        yield PushEnd(sha256 or hashlib.sha256(data).hexdigest())


def header(file_name: str, data: bytes, **fields: object) -> PushHeader:
    return PushHeader(space="", file_name=file_name, size=len(data), **fields)  # type: ignore[arg-type]


@pytest.fixture
def feed(sessions: sessionmaker[Session], tmp_path: Path) -> PackageFeed:
    with sessions.begin() as session:
        doc_store.ensure_space(session)
    made = PackageFeed(Transactions(sessions), tmp_path / "packages")
    asyncio.run(made.start())
    return made


def stored_files(feed: PackageFeed) -> list[Path]:
    return sorted(p for p in (feed.blobs.root / "sha256").rglob("*") if p.is_file())


def temp_files(feed: PackageFeed) -> list[Path]:
    return sorted((feed.blobs.root / "tmp").iterdir())


def make_release(sessions: sessionmaker[Session], package_id: str, version: str) -> str:
    """A release recording a package version (rows written directly: only the store is tested)."""
    with sessions.begin() as session:
        space = doc_store.get_space(session, doc_store.DEFAULT_SPACE)
        project_id, release_id = uuid.uuid4().hex, uuid.uuid4().hex
        session.add(
            Document(
                id=project_id,
                space_id=space.id,
                kind="project",
                name=f"P{project_id[:6]}",
                name_key=f"p{project_id[:6]}",
                sort_order=0,
                body={},
                revision=1,
                created_ms=now_ms(),
                updated_ms=now_ms(),
            )
        )
        session.add(
            Release(
                id=release_id,
                space_id=space.id,
                project_id=project_id,
                channel="Default",
                version="1.0.0",
                version_key="1.0.0",
                notes="",
                snapshot={},
                created_ms=now_ms(),
                created_by="test",
                variables_snapshot_ms=now_ms(),
            )
        )
        session.flush()
        record = package_store.get(session, space.id, package_id.casefold(), version)
        package_store.record_for_release(
            session,
            release_id,
            space.id,
            [
                package_store.RecordedPackage(
                    record.package_id,
                    record.package_key,
                    record.version,
                    record.version_key,
                    record.sha256,
                )
            ],
        )
    return release_id


def test_a_push_is_stored_under_its_sha256_and_listed(feed: PackageFeed) -> None:
    data = content("a")
    result = asyncio.run(feed.push(header("Web.1.4.0.tar.gz", data), stream(data), "ci"))
    assert result.record.sha256 == hashlib.sha256(data).hexdigest()
    assert (result.record.package_id, result.record.version, result.record.format) == (
        "Web",
        "1.4.0",
        "tar.gz",
    )
    assert result.stored_new_file
    assert not result.replaced
    assert stored_files(feed) == [feed.blobs.path_of(result.record.sha256)]
    assert feed.blobs.path_of(result.record.sha256).read_bytes() == data
    assert temp_files(feed) == []
    listed = asyncio.run(feed.list("", "web"))
    assert [(r.package_id, r.version, r.size, r.pushed_by) for r in listed] == [
        ("Web", "1.4.0", len(data), "ci")
    ]
    opened = asyncio.run(feed.open("", "WEB", "1.4"))
    assert opened.path.read_bytes() == data
    assert asyncio.run(feed.open_sha256(result.record.sha256)).record.id == opened.record.id


def test_the_same_bytes_twice_are_one_file_until_the_last_version_goes(feed: PackageFeed) -> None:
    data = content("shared")
    asyncio.run(feed.push(header("web.1.0.0.zip", data), stream(data), "ci"))
    second = asyncio.run(feed.push(header("web.1.0.1.zip", data), stream(data), "ci"))
    assert not second.stored_new_file
    assert len(stored_files(feed)) == 1
    asyncio.run(feed.delete("", "web", "1.0.0", "ops"))
    assert len(stored_files(feed)) == 1
    asyncio.run(feed.delete("", "web", "1.0.1", "ops"))
    assert stored_files(feed) == []
    assert temp_files(feed) == []


def test_listing_is_by_package_then_newest_version_first(feed: PackageFeed) -> None:
    for name in ["web.1.9.0.zip", "web.1.10.0.zip", "api.2.0.0.zip", "web.1.10.0-rc.1.zip"]:
        data = content(name)
        asyncio.run(feed.push(header(name, data), stream(data), "ci"))
    listed = [(r.package_id, r.version) for r in asyncio.run(feed.list(""))]
    assert listed == [("api", "2.0.0"), ("web", "1.10.0"), ("web", "1.10.0-rc.1"), ("web", "1.9.0")]


def test_a_duplicate_is_refused_before_any_byte_is_read(feed: PackageFeed) -> None:
    data = content("dup")
    asyncio.run(feed.push(header("web.1.0.0.zip", data), stream(data), "ci"))
    read: list[int] = []

    async def watched() -> AsyncIterator[bytes | PushEnd]:
        async for item in stream(content("other")):
            read.append(1)
            yield item

    # 1.0 is 1.0.0, and ids compare without case.
    with pytest.raises(Conflict, match="already in the feed.*--replace"):
        asyncio.run(feed.push(header("WEB.1.0.zip", data), watched(), "ci"))
    assert read == []
    assert len(stored_files(feed)) == 1
    assert temp_files(feed) == []


def test_replace_gives_new_bytes_unless_a_release_recorded_the_version(
    feed: PackageFeed, sessions: sessionmaker[Session]
) -> None:
    old, new = content("old"), content("new")
    asyncio.run(feed.push(header("web.1.0.0.zip", old), stream(old), "ci"))
    replaced = asyncio.run(feed.push(header("web.1.0.0.zip", new, replace=True), stream(new), "ci"))
    assert replaced.replaced
    assert replaced.record.sha256 == hashlib.sha256(new).hexdigest()
    # The old bytes had no other version: their file is gone.
    assert stored_files(feed) == [feed.blobs.path_of(replaced.record.sha256)]
    make_release(sessions, "web", "1.0.0")
    with pytest.raises(FailedPrecondition, match=r"cannot be replaced: releases P\w+ \S+ recorded"):
        asyncio.run(feed.push(header("web.1.0.0.zip", old, replace=True), stream(old), "ci"))
    assert asyncio.run(feed.open("", "web", "1.0.0")).path.read_bytes() == new


def test_delete_and_prune_never_remove_a_recorded_version(
    feed: PackageFeed, sessions: sessionmaker[Session]
) -> None:
    for name in ["web.1.0.0.zip", "web.1.1.0.zip", "web.1.2.0.zip"]:
        data = content(name)
        asyncio.run(feed.push(header(name, data), stream(data), "ci"))
    make_release(sessions, "web", "1.1.0")
    with pytest.raises(FailedPrecondition, match=r"web 1.1.0 is used by releases P\w+ 1.0.0"):
        asyncio.run(feed.delete("", "web", "1.1.0", "ops"))
    with pytest.raises(NotFound, match="web 9.0.0 is not in the feed"):
        asyncio.run(feed.delete("", "web", "9.0.0", "ops"))

    dry = asyncio.run(feed.prune("", "ops", dry_run=True))
    assert sorted(r.version for r in dry.removed) == ["1.0.0", "1.2.0"]
    assert dry.kept_referenced == 1
    assert len(asyncio.run(feed.list(""))) == 3
    assert len(stored_files(feed)) == 3

    done = asyncio.run(feed.prune("", "ops", dry_run=False))
    assert sorted(r.version for r in done.removed) == ["1.0.0", "1.2.0"]
    assert done.freed_bytes == 2 * len(content("x"))
    assert [r.version for r in asyncio.run(feed.list(""))] == ["1.1.0"]
    assert len(stored_files(feed)) == 1


def test_every_push_replace_delete_and_prune_is_audited(
    feed: PackageFeed, sessions: sessionmaker[Session]
) -> None:
    a, b = content("a"), content("b")
    asyncio.run(feed.push(header("web.1.0.0.zip", a), stream(a), "ci"))
    asyncio.run(feed.push(header("web.1.0.0.zip", b, replace=True), stream(b), "ci"))
    asyncio.run(feed.push(header("web.2.0.0.zip", b), stream(b), "ci"))
    asyncio.run(feed.delete("", "web", "1.0.0", "ops"))
    asyncio.run(feed.prune("", "ops", dry_run=False))
    with sessions() as session:
        rows = session.scalars(
            select(Event).where(Event.kind == "package").order_by(Event.occurred_ms, Event.id)
        ).all()
        seen = [(e.category, e.actor, e.document_name) for e in rows]
    assert seen == [
        ("pushed", "ci", "web 1.0.0"),
        ("replaced", "ci", "web 1.0.0"),
        ("pushed", "ci", "web 2.0.0"),
        ("deleted", "ops", "web 1.0.0"),
        ("pruned", "ops", "web 2.0.0"),
    ]


@pytest.mark.parametrize(
    ("variant", "problem"),
    [
        ("no trailer", "without its trailer"),
        ("wrong sha256", "not the .* the sender computed"),
        ("short", "not the .* declared"),
        ("long", "more bytes arrived"),
    ],
)
def test_a_push_that_does_not_check_out_leaves_nothing(
    feed: PackageFeed, variant: str, problem: str
) -> None:
    data = content(variant)
    declared = {"short": len(data) + 1, "long": len(data) - 1}.get(variant, len(data))
    chunks = stream(
        data,
        trailer=variant != "no trailer",
        sha256="0" * 64 if variant == "wrong sha256" else "",
    )
    pushed = PushHeader(space="", file_name="web.1.0.0.zip", size=declared)
    with pytest.raises(InvalidArgument, match=problem):
        asyncio.run(feed.push(pushed, chunks, "ci"))
    assert asyncio.run(feed.list("")) == []
    assert stored_files(feed) == []
    assert temp_files(feed) == []


def test_a_push_cancelled_mid_stream_leaves_nothing(feed: PackageFeed) -> None:
    data = content("cut")

    async def run() -> None:
        arrived = asyncio.Event()

        async def stalls() -> AsyncIterator[bytes | PushEnd]:
            yield data[:CHUNK]
            arrived.set()
            await asyncio.Event().wait()  # the client goes quiet, then the call is cancelled
            yield data[CHUNK:]

        task = asyncio.create_task(feed.push(header("web.1.0.0.zip", data), stalls(), "ci"))
        await arrived.wait()
        # The first chunk is on disk: the feed asked for the next only after writing it.
        assert len(temp_files(feed)) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert asyncio.run(feed.list("")) == []
    assert stored_files(feed) == []
    assert temp_files(feed) == []


def test_bad_names_are_refused_and_nothing_is_stored(feed: PackageFeed) -> None:
    data = content("bad")
    for name, problem in [
        ("web.zip", "has no version"),
        ("web.1.0.0.rar", "not a supported package file"),
    ]:
        with pytest.raises(InvalidArgument, match=problem):
            asyncio.run(feed.push(header(name, data), stream(data), "ci"))
    assert stored_files(feed) == []
    assert temp_files(feed) == []


def test_a_removal_puts_the_file_back_when_a_row_names_it_again(feed: PackageFeed) -> None:
    data = content("race")
    pushed = asyncio.run(feed.push(header("web.1.0.0.zip", data), stream(data), "ci"))
    # A removal that lost the race: the file is retired, then the recount finds the row.
    aside = feed.blobs.retire(pushed.record.sha256)
    assert aside is not None
    assert not feed.blobs.exists(pushed.record.sha256)
    feed.blobs.restore(aside, pushed.record.sha256)
    assert feed.blobs.path_of(pushed.record.sha256).read_bytes() == data
    # A crashed node's leftovers: a retired file is put back, a partial push deleted.
    aside = feed.blobs.retire(pushed.record.sha256)
    assert aside is not None
    partial = feed.blobs.begin()
    partial.write(b"half")
    assert feed.blobs.sweep(-1) == 2
    partial.discard()
    assert feed.blobs.exists(pushed.record.sha256)
    assert temp_files(feed) == []


def test_a_push_the_root_has_no_room_for_is_refused_before_any_byte(
    feed: PackageFeed, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_module, "FREE_MARGIN_BYTES", 1 << 62)
    data = content("big")
    with pytest.raises(feed_module.DiskFull, match="not enough for a"):
        asyncio.run(feed.push(header("web.1.0.0.zip", data), stream(data), "ci"))
    assert stored_files(feed) == []
    assert temp_files(feed) == []

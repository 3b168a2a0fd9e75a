"""Benchmark: per-row cost of the store's release and machine paths vs bare SQLAlchemy Core.

For each dialect (a SQLite file in a temporary directory; a PostgreSQL schema of its own,
dropped at the end) and each size N (1,000 and 10,000; --quick: 200 and 1,000), on freshly
migrated databases:

- create N releases through `store.releases.create` and N machines through
  `store.machines.add`, one transaction per row as the admin API does; then, on a second fresh
  database, the same in transactions of 500;
- list them all page by page (100 a page) through `releases.list_page` and
  `machines.list_machines`, each page in its own transaction as the API does;
- fetch the first page, page 2, the middle page and the last page (reached by the tokens)
  many times: a keyset page should cost the same at any depth.

Bare baseline, same run, same database, same engine (so the same pragmas and BEGIN): Core
`insert()` of the same rows into a mirror table created with Core next to the real one (same
columns, types, indexes, checks and foreign keys, so the database does the same work), and
Core `select ... order by ... limit` keyset paging of the same rows (a row-value comparison
for the releases' two-column key). Store and bare runs alternate in chunks, so load from other
work on this shared machine falls on both alike. PostgreSQL commits do not wait for the WAL
fsync unless --durable (the wait is the same on both sides, and SQLite in WAL mode with
synchronous=NORMAL does not fsync on commit either); the tables are ANALYZEd before listing, as
autovacuum would.

Printed: µs per row for each operation with the bare figure and the ratio, in wall time and in
CPU time (this process plus its PostgreSQL backends: far steadier than wall time on a busy
machine); the growth factor of the per-row cost from the small N to the large N (1.0: total
cost linear in N); how a deep page compares with the first; the plans of the deep-page
queries; one SUMMARY line.

Run: .venv/bin/python scripts/bench/bench_store.py [--quick] [--dialect sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from benchlib import heading
from sqlalchemy import (
    CheckConstraint,
    Column,
    Engine,
    ForeignKeyConstraint,
    Index,
    MetaData,
    Table,
    bindparam,
    create_engine,
    event,
    insert,
    select,
    text,
    tuple_,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.store import documents, machines, releases
from cuttle.server.store.database import create_engine_for, migrate, session_maker, sqlite_url
from cuttle.server.store.models import Machine, Release
from cuttle.server.store.records import now_ms

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PAGE_SIZE = 100
# Rows per interleaving chunk, and the size of a batched transaction.
CHUNK = 500
LIST_REPEATS = 3
SIZES = (1_000, 10_000)
QUICK_SIZES = (200, 1_000)

# What a release snapshot of a small project weighs (~2 KiB of JSON): the listing reads it back.
SNAPSHOT: dict[str, Any] = {
    "project": {
        "name": "Web",
        "lifecycle": "0" * 32,
        "process": {
            "steps": [
                {
                    "name": f"Step {s}",
                    "target_tags": ["web-server"],
                    "condition": "success",
                    "actions": [
                        {
                            "name": f"Step {s}",
                            "type": "script",
                            "properties": {"syntax": "bash", "body": "echo deploying #{Version}"},
                            "environments": [],
                            "retries": 0,
                        }
                    ],
                }
                for s in range(4)
            ]
        },
        "variables": [
            {"name": f"Setting{v}", "value": f"value-{v}", "scope": {"environment": ["Dev"]}}
            for v in range(12)
        ],
    },
    "library_variable_sets": [],
}
# Not parsed by the store; a certificate's size is what matters for the rows.
FAKE_PEM = "-----BEGIN CERTIFICATE-----\n" + ("A" * 64 + "\n") * 9 + "-----END CERTIFICATE-----\n"


# -- databases ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """Where PostgreSQL is, whether its commits wait for the disk, how long to repeat reads."""

    pg_url: str
    durable: bool
    # Full listings repeat at least LIST_REPEATS times and while under this many seconds.
    list_seconds: float = 2.0
    page_repeats: int = 25


@dataclass
class Database:
    """A migrated database with a space, a project, and the bare mirror tables beside."""

    dialect: str
    engine: Engine
    sessions: sessionmaker[Session]
    space_id: str
    project_id: str
    bare_releases: Table
    bare_machines: Table
    clock: Clock


def mirror_table(source: Table, name: str, metadata: MetaData) -> Table:
    """A Core table with the columns, checks, foreign keys and indexes of source, renamed."""
    columns = [
        Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable, autoincrement=False)
        for c in source.columns
    ]
    constraints: list[Any] = [
        ForeignKeyConstraint(
            [c.name for c in fk.columns], [e.column for e in fk.elements], ondelete=fk.ondelete
        )
        for fk in source.foreign_key_constraints
    ]
    checks = [c for c in source.constraints if isinstance(c, CheckConstraint)]
    constraints += [CheckConstraint(c.sqltext, name=f"ck_{name}_{i}") for i, c in enumerate(checks)]
    table = Table(name, metadata, *columns, *constraints)
    for index in source.indexes:
        # Index names are unique per schema (PostgreSQL) or database (SQLite): rename them.
        Index(
            f"ix_{name}_" + "_".join(c.name for c in index.columns),
            *(table.c[c.name] for c in index.columns),
            unique=bool(index.unique),
        )
    return table


def _prepare(dialect: str, engine: Engine) -> Database:
    # Before the first connection, so that every PostgreSQL backend is known to the clock.
    clock = Clock(engine)
    migrate(engine)
    sessions = session_maker(engine)
    with sessions.begin() as session:
        space, _ = documents.ensure_space(session)
        project = documents.insert_document(
            session,
            space_id=space.id,
            kind="project",
            name="Web",
            body={"name": "Web"},
            references=None,
        )
    metadata = MetaData()
    bare_releases = mirror_table(Release.__table__, "bench_bare_releases", metadata)  # type: ignore[arg-type]
    bare_machines = mirror_table(Machine.__table__, "bench_bare_machines", metadata)  # type: ignore[arg-type]
    metadata.create_all(engine)
    # A full collection walks every tracked object: without this, each gen-2 collection during
    # a measurement would charge the store (or the bare side) for walking the modules this
    # benchmark and Alembic loaded, 30 ms and more a time, at random points.
    gc.collect()
    gc.freeze()
    return Database(
        dialect, engine, sessions, space.id, project.id, bare_releases, bare_machines, clock
    )


@contextmanager
def database(dialect: str, root: Path, setup: Setup) -> Iterator[Database]:
    """A fresh migrated database: a SQLite file under root, or a PostgreSQL schema."""
    if dialect == "sqlite":
        path = root / f"store-{uuid.uuid4().hex}.db"
        engine = create_engine_for(sqlite_url(path))
        try:
            yield _prepare(dialect, engine)
        finally:
            engine.dispose()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    schema = f"bench_{uuid.uuid4().hex}"
    admin = create_engine(setup.pg_url)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        print(f"  (PostgreSQL schema {schema}, dropped at the end)", flush=True)
        try:
            # search_path set at connect time puts every table, alembic_version included, into
            # the schema; %3D is the URL-encoded "=", %20 separates options.
            options = f"-csearch_path%3D{schema}"
            if not setup.durable:
                # A commit's WAL fsync (several ms on this disk) is the same for store and bare:
                # it would only dilute the ratio and stretch the run. SQLite (WAL, synchronous
                # NORMAL) does not fsync on commit either, so the dialects stay comparable.
                options += "%20-csynchronous_commit%3Doff"
            engine = create_engine_for(f"{setup.pg_url}?options={options}")
            try:
                yield _prepare(dialect, engine)
            finally:
                engine.dispose()
        finally:
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


def postgres_problem(pg_url: str) -> str | None:
    """Why PostgreSQL cannot be used; None when it answers."""
    engine = create_engine(pg_url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except OperationalError as error:
        return (str(error.orig).strip().splitlines() or [type(error.orig).__name__])[0]
    finally:
        engine.dispose()
    return None


# -- rows --------------------------------------------------------------------------------------


def _version(i: int) -> str:
    return f"1.{i // 1000}.{i % 1000}"


def _machine_name(i: int) -> str:
    return f"web-{i:05d}"


def _thumbprint(name: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}{name}".encode()).hexdigest().upper()


def store_release(session: Session, db: Database, i: int) -> None:
    """Create release i through the store."""
    releases.create(
        session,
        space_id=db.space_id,
        project_id=db.project_id,
        channel="Default",
        version=_version(i),
        version_key=_version(i),
        notes="",
        snapshot=SNAPSHOT,
        created_by="bench",
    )


def bare_release(db: Database, i: int) -> dict[str, Any]:
    """The row store_release would write for release i."""
    now = now_ms()
    return {
        "id": uuid.uuid4().hex,
        "space_id": db.space_id,
        "project_id": db.project_id,
        "channel": "Default",
        "version": _version(i),
        "version_key": _version(i),
        "notes": "",
        "snapshot": SNAPSHOT,
        "created_ms": now,
        "created_by": "bench",
        "variables_snapshot_ms": now,
    }


def store_machine(session: Session, db: Database, i: int) -> None:
    """Register machine i through the store."""
    name = _machine_name(i)
    machines.add(
        session,
        name=name,
        comms_style="listening",
        endpoint=f"{name}.example.internal:10933",
        thumbprint=_thumbprint(name, "store"),
        certificate_pem=FAKE_PEM,
        environments=("Production",),
        roles=("web-server",),
    )


def bare_machine(db: Database, i: int) -> dict[str, Any]:
    """The row store_machine would write for machine i."""
    name = _machine_name(i)
    return {
        "id": uuid.uuid4().hex,
        "name": name,
        "name_key": name.casefold(),
        "comms_style": "listening",
        "endpoint": f"{name}.example.internal:10933",
        "thumbprint": _thumbprint(name, "bare"),
        "certificate_pem": FAKE_PEM,
        "environments": ["Production"],
        "roles": ["web-server"],
        "health": "unknown",
        "health_message": "",
        "tentacle_version": "",
        "os": "",
        "free_disk_bytes": None,
        "last_health_check_ms": None,
        "registered_ms": now_ms(),
        "enabled": True,
        "tenants": [],
        "tenant_tags": [],
        "tenanted_mode": "untenanted",
        "policy": None,
    }


# -- measurements ------------------------------------------------------------------------------


class Clock:
    """Wall time, and CPU time of this process plus its PostgreSQL backends.

    The machine is small and shared: wall time carries everyone else's bursts, CPU time mostly
    does not, so the growth factors are given in both. A backend's CPU comes from
    /proc/<pid>/schedstat (nanoseconds), readable for a local server.
    """

    def __init__(self, engine: Engine) -> None:
        self.backends: set[int] = set()
        if engine.dialect.name == "postgresql":
            event.listen(engine, "connect", self._connected)

    def _connected(self, dbapi_connection: Any, _record: Any) -> None:
        self.backends.add(int(dbapi_connection.info.backend_pid))

    def _backend_ns(self) -> dict[int, int]:
        found: dict[int, int] = {}
        for pid in self.backends:
            try:
                found[pid] = int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
        return found

    def read(self) -> tuple[float, float, dict[int, int]]:
        """(wall s, own CPU s, backend CPU ns by pid) at this moment."""
        return time.perf_counter(), time.process_time(), self._backend_ns()

    def since(self, mark: tuple[float, float, dict[int, int]]) -> Cost:
        """Wall and CPU seconds spent since mark."""
        wall, own, backends = mark
        now_wall, now_own, now_backends = self.read()
        backend_ns = sum(ns - backends.get(pid, 0) for pid, ns in now_backends.items())
        return Cost(now_wall - wall, now_own - own + backend_ns / 1e9)


@dataclass(frozen=True)
class Cost:
    """Wall and CPU time of some work (seconds, or µs per row once divided)."""

    wall: float
    cpu: float

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.wall + other.wall, self.cpu + other.cpu)

    def per_row_us(self, rows: int) -> Cost:
        """This cost spread over rows, in µs."""
        return Cost(self.wall / rows * 1e6, self.cpu / rows * 1e6)


@dataclass
class Figures:
    """Per-row costs in µs, keyed by (dialect, N, operation): (store, bare)."""

    rows: dict[tuple[str, int, str], tuple[Cost, Cost]] = field(default_factory=dict)
    notes: dict[tuple[str, int, str], float] = field(default_factory=dict)

    def put(self, dialect: str, n: int, op: str, store: Cost, bare: Cost) -> None:
        """Record and print one figure beside its baseline."""
        self.rows[(dialect, n, op)] = (store, bare)
        print(
            f"  {op:<26} store {store.wall:>9,.1f} bare {bare.wall:>8,.1f} µs/row "
            f"ratio {store.wall / bare.wall:5.2f}x   (cpu: store {store.cpu:>8,.1f} "
            f"bare {bare.cpu:>8,.1f} ratio {store.cpu / bare.cpu:5.2f}x)",
            flush=True,
        )


def analyze(db: Database) -> None:
    """Refresh the planner's statistics of the schema, as autovacuum would."""
    with db.engine.begin() as connection:
        connection.execute(text("ANALYZE"))


def _chunks(n: int) -> list[list[int]]:
    # Rows are created in a shuffled order: names and versions arrive in no particular order
    # in real life, and indexes only ever appended to at their end would flatter both sides.
    order = list(range(n))
    random.Random(5).shuffle(order)  # noqa: S311 - a fixed, reproducible order, not a secret
    return [order[i : i + CHUNK] for i in range(0, n, CHUNK)]


def time_creation(db: Database, n: int, batched: bool) -> dict[str, tuple[Cost, Cost]]:
    """Create n releases and n machines, store and bare alternating; µs/row of each."""
    release_insert = insert(db.bare_releases)
    machine_insert = insert(db.bare_machines)

    def store_side(make: Callable[[Session, Database, int], None], chunk: list[int]) -> None:
        if batched:
            with db.sessions.begin() as session:
                for i in chunk:
                    make(session, db, i)
        else:
            for i in chunk:
                with db.sessions.begin() as session:
                    make(session, db, i)

    def bare_side(
        statement: Any, row: Callable[[Database, int], dict[str, Any]], chunk: list[int]
    ) -> None:
        if batched:
            with db.engine.begin() as connection:
                for i in chunk:
                    connection.execute(statement, row(db, i))
        else:
            for i in chunk:
                with db.engine.begin() as connection:
                    connection.execute(statement, row(db, i))

    kinds: list[tuple[str, Callable[[list[int]], None], Callable[[list[int]], None]]] = [
        (
            "releases",
            lambda c: store_side(store_release, c),
            lambda c: bare_side(release_insert, bare_release, c),
        ),
        (
            "machines",
            lambda c: store_side(store_machine, c),
            lambda c: bare_side(machine_insert, bare_machine, c),
        ),
    ]
    result: dict[str, tuple[Cost, Cost]] = {}
    for kind, store_run, bare_run in kinds:
        spent = {"store": Cost(0, 0), "bare": Cost(0, 0)}
        for number, chunk in enumerate(_chunks(n)):
            # Alternate which side goes first, so neither always meets the warmer cache.
            sides = [("store", store_run), ("bare", bare_run)]
            for side, run in sides if number % 2 == 0 else reversed(sides):
                mark = db.clock.read()
                run(chunk)
                spent[side] += db.clock.since(mark)
            if number == 0 and db.dialect == "postgresql":
                # What autovacuum does within a minute. Without it, the generic plan that
                # psycopg's prepared statements cached while the table was nearly empty is
                # kept: releases.create's version check then walks the (project, created)
                # index, every row of the project, and the per-row cost grows with N.
                analyze(db)
        result[kind] = (spent["store"].per_row_us(n), spent["bare"].per_row_us(n))
    return result


@dataclass
class Pager:
    """One way of reading a listing: fetch(token) returns (rows on the page, next token)."""

    fetch: Callable[[Any], tuple[int, Any]]

    def read_all(self) -> tuple[int, list[Any]]:
        """Read every page; (rows read, the tokens that led to pages 2..last)."""
        count, token = 0, None
        tokens: list[Any] = []
        while True:
            rows, token = self.fetch(token)
            count += rows
            if token is None:
                return count, tokens
            tokens.append(token)


def store_release_pager(db: Database) -> Pager:
    """Releases newest first through releases.list_page, a transaction per page."""

    def fetch(token: Any) -> tuple[int, Any]:
        with db.sessions.begin() as session:
            page = releases.list_page(session, db.project_id, page_size=PAGE_SIZE, page_token=token)
            return len(page.items), page.next_page_token

    return Pager(fetch)


def store_machine_pager(db: Database) -> Pager:
    """Machines by name through machines.list_machines, a transaction per page."""

    def fetch(token: Any) -> tuple[int, Any]:
        with db.sessions.begin() as session:
            page = machines.list_machines(session, page_size=PAGE_SIZE, page_token=token)
            return len(page.items), page.next_page_token

    return Pager(fetch)


def bare_release_pager(db: Database) -> Pager:
    """The same releases by Core keyset paging on (created_ms, id), descending."""
    t = db.bare_releases
    first = (
        select(t)
        .where(t.c.project_id == bindparam("project"))
        .order_by(t.c.created_ms.desc(), t.c.id.desc())
        .limit(PAGE_SIZE + 1)
    )
    after = first.where(tuple_(t.c.created_ms, t.c.id) < tuple_(bindparam("at"), bindparam("last")))

    def fetch(token: Any) -> tuple[int, Any]:
        with db.engine.begin() as connection:
            if token is None:
                rows = connection.execute(first, {"project": db.project_id}).all()
            else:
                at, last = token
                rows = connection.execute(
                    after, {"project": db.project_id, "at": at, "last": last}
                ).all()
        if len(rows) <= PAGE_SIZE:
            return len(rows), None
        tail = rows[PAGE_SIZE - 1]
        return PAGE_SIZE, (tail.created_ms, tail.id)

    return Pager(fetch)


def bare_machine_pager(db: Database) -> Pager:
    """The same machines by Core keyset paging on name_key."""
    t = db.bare_machines
    first = select(t).order_by(t.c.name_key).limit(PAGE_SIZE + 1)
    after = first.where(t.c.name_key > bindparam("after"))

    def fetch(token: Any) -> tuple[int, Any]:
        with db.engine.begin() as connection:
            if token is None:
                rows = connection.execute(first).all()
            else:
                rows = connection.execute(after, {"after": token}).all()
        if len(rows) <= PAGE_SIZE:
            return len(rows), None
        return PAGE_SIZE, rows[PAGE_SIZE - 1].name_key

    return Pager(fetch)


# The pages timed one by one: a keyset page should cost the same wherever it is.
PAGES = ("first page", "page 2", "middle page", "last page")


def _page_tokens(tokens: list[Any]) -> dict[str, Any]:
    """The token that leads to each of PAGES (tokens[k] leads to page k + 2)."""
    pages = len(tokens) + 1
    middle = max(2, (pages + 1) // 2)
    return {
        "first page": None,
        "page 2": tokens[0],
        "middle page": tokens[middle - 2],
        "last page": tokens[-1],
    }


def _median(costs: list[Cost]) -> Cost:
    return Cost(statistics.median(c.wall for c in costs), statistics.median(c.cpu for c in costs))


def time_listing(
    db: Database, store: Pager, bare: Pager, n: int, what: str, setup: Setup
) -> dict[str, dict[str, Cost]]:
    """µs/row of reading all pages (best of several), and of each of PAGES (median)."""
    best = {"store": Cost(float("inf"), float("inf")), "bare": Cost(float("inf"), float("inf"))}
    tokens: dict[str, dict[str, Any]] = {}
    repeats, started = 0, time.perf_counter()
    # At least three, more while they are cheap: the best of several sheds the bursts of
    # other work on this machine.
    while repeats < LIST_REPEATS or (
        time.perf_counter() - started < setup.list_seconds and repeats < 15
    ):
        repeats += 1
        for side, pager in (("store", store), ("bare", bare)):
            mark = db.clock.read()
            count, side_tokens = pager.read_all()
            spent = db.clock.since(mark)
            best[side] = Cost(min(best[side].wall, spent.wall), min(best[side].cpu, spent.cpu))
            if count != n:
                raise RuntimeError(f"{side} listing of {what} read {count} rows, not {n}")
            tokens[side] = _page_tokens(side_tokens)
    samples: dict[tuple[str, str], list[Cost]] = {}
    for _ in range(setup.page_repeats):
        # Round robin, so that a burst of load falls on every page alike.
        for side, pager in (("store", store), ("bare", bare)):
            for where, token in tokens[side].items():
                mark = db.clock.read()
                rows, _ = pager.fetch(token)
                samples.setdefault((side, where), []).append(db.clock.since(mark))
                if rows != PAGE_SIZE:
                    raise RuntimeError(f"{side} {where} of {what} held {rows} rows")
    return {
        side: {"list all": best[side].per_row_us(n)}
        | {where: _median(samples[(side, where)]).per_row_us(PAGE_SIZE) for where in PAGES}
        for side in ("store", "bare")
    }


def time_versions_read(db: Database) -> float:
    """ms of releases.versions(), which the model's release creation calls on every create."""
    spent: list[float] = []
    for _ in range(5):
        with db.sessions.begin() as session:
            start = time.perf_counter()
            releases.versions(session, db.project_id)
            spent.append(time.perf_counter() - start)
    return statistics.median(spent) * 1e3


# -- plans -------------------------------------------------------------------------------------


@contextmanager
def last_select(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Capture the SELECT statements (with parameters) run on engine in the block."""
    seen: list[tuple[str, Any]] = []

    def capture(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", capture)


def explain(engine: Engine, statement: str, parameters: Any) -> list[str]:
    """The query plan of a captured statement; on PostgreSQL with the rows actually read."""
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            return [str(row[-1]) for row in rows]
        rows = connection.exec_driver_sql(
            f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {statement}", parameters
        )
        return [str(row[0]) for row in rows]


def print_deep_page_plans(db: Database, pagers: Sequence[tuple[str, Pager]]) -> None:
    """Show how each side's query for the middle and the last page reaches its rows."""
    for label, pager in pagers:
        _, tokens = pager.read_all()
        for where in ("middle page", "last page"):
            with last_select(db.engine) as seen:
                pager.fetch(_page_tokens(tokens)[where])
            statement, parameters = seen[-1]
            print(f"  {label}, {where}:")
            for line in explain(db.engine, statement, parameters):
                print(f"      {line}")


# -- the run -----------------------------------------------------------------------------------

CREATE_OPS = (
    "releases create 1/txn",
    "machines create 1/txn",
    "releases create 500/txn",
    "machines create 500/txn",
)
LIST_OPS = ("releases list all", "machines list all")
PAGE_OPS = tuple(f"{kind} {where}" for kind in ("releases", "machines") for where in PAGES)


def run_dialect(dialect: str, sizes: Sequence[int], root: Path, setup: Setup) -> Figures:
    """Every measurement for one dialect, at every size."""
    figures = Figures()
    for n in sizes:
        heading(f"{dialect}, N = {n:,}")
        with database(dialect, root, setup) as db:
            created = time_creation(db, n, batched=False)
            figures.put(dialect, n, "releases create 1/txn", *created["releases"])
            figures.put(dialect, n, "machines create 1/txn", *created["machines"])
            if dialect == "postgresql":
                # Again, so that the listing plans are those of a server with these rows.
                analyze(db)
            listings = {
                "releases": time_listing(
                    db, store_release_pager(db), bare_release_pager(db), n, "releases", setup
                ),
                "machines": time_listing(
                    db, store_machine_pager(db), bare_machine_pager(db), n, "machines", setup
                ),
            }
            for kind, sides in listings.items():
                for what in ("list all", *PAGES):
                    figures.put(
                        dialect, n, f"{kind} {what}", sides["store"][what], sides["bare"][what]
                    )
            versions_ms = time_versions_read(db)
            figures.notes[(dialect, n, "versions ms")] = versions_ms
            print(
                f"  (API path: releases.versions(), read by every CreateRelease, takes "
                f"{versions_ms:,.2f} ms with {n:,} releases in the project)",
                flush=True,
            )
            if n == sizes[-1]:
                heading(f"{dialect}, N = {n:,}: plans of the deep-page queries")
                print_deep_page_plans(
                    db,
                    [
                        ("store releases.list_page", store_release_pager(db)),
                        ("bare releases", bare_release_pager(db)),
                        ("store machines.list_machines", store_machine_pager(db)),
                        ("bare machines", bare_machine_pager(db)),
                    ],
                )
        with database(dialect, root, setup) as db:
            created = time_creation(db, n, batched=True)
            heading(f"{dialect}, N = {n:,}, transactions of {CHUNK}")
            figures.put(dialect, n, "releases create 500/txn", *created["releases"])
            figures.put(dialect, n, "machines create 500/txn", *created["machines"])
    return figures


def report(dialect: str, figures: Figures, sizes: Sequence[int]) -> str:
    """Print growth and depth for one dialect; return its part of the SUMMARY line."""
    small, large = sizes[0], sizes[-1]
    heading(
        f"{dialect}: growth of the per-row cost from N = {small:,} to N = {large:,} "
        "(1.0 = total cost linear in N; store/bare: the growth the store adds to the database's)"
    )
    growth: dict[str, tuple[Cost, Cost]] = {}
    for op in CREATE_OPS + LIST_OPS + PAGE_OPS:
        store_small, bare_small = figures.rows[(dialect, small, op)]
        store_large, bare_large = figures.rows[(dialect, large, op)]
        store = Cost(store_large.wall / store_small.wall, store_large.cpu / store_small.cpu)
        bare = Cost(bare_large.wall / bare_small.wall, bare_large.cpu / bare_small.cpu)
        growth[op] = (store, bare)
        print(
            f"  {op:<26} cpu: store x{store.cpu:5.2f} bare x{bare.cpu:5.2f} "
            f"store/bare {store.cpu / bare.cpu:5.2f}   "
            f"(wall: store x{store.wall:5.2f} bare x{bare.wall:5.2f})",
            flush=True,
        )
    versions = [figures.notes[(dialect, n, "versions ms")] for n in (small, large)]
    print(
        f"  {'releases.versions()':<26} x{versions[1] / versions[0]:5.2f} per call for "
        f"x{large // small} rows: every CreateRelease reads all of the project's versions",
        flush=True,
    )
    heading(f"{dialect}: a page deep in vs the first page, cpu (1.0 = depth costs nothing)")
    depth: dict[tuple[int, str], float] = {}
    for n in sizes:
        for kind in ("releases", "machines"):
            store_first, bare_first = figures.rows[(dialect, n, f"{kind} first page")]
            cells: list[str] = []
            for where in PAGES[1:]:
                store_deep, bare_deep = figures.rows[(dialect, n, f"{kind} {where}")]
                depth[(n, f"{kind} {where}")] = store_deep.cpu / store_first.cpu
                cells.append(
                    f"{where} store x{store_deep.cpu / store_first.cpu:4.2f} "
                    f"bare x{bare_deep.cpu / bare_first.cpu:4.2f}"
                )
            print(f"  {kind:<8} N = {n:<7,} " + "   ".join(cells), flush=True)

    def worst_ratio(ops: Sequence[str]) -> float:
        return max(
            figures.rows[(dialect, large, op)][0].cpu / figures.rows[(dialect, large, op)][1].cpu
            for op in ops
        )

    worst = max(CREATE_OPS + LIST_OPS, key=lambda op: growth[op][0].cpu)
    return (
        f"{dialect} create x{worst_ratio(CREATE_OPS[:2]):.1f} "
        f"(batched x{worst_ratio(CREATE_OPS[2:]):.1f}) list x{worst_ratio(LIST_OPS):.1f} "
        f"growth {growth[worst][0].cpu:.2f} (bare {growth[worst][1].cpu:.2f}) "
        f"deep x{max(v for (n, _), v in depth.items() if n == large):.2f}"
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds through the finally blocks, which drop the PostgreSQL schemas.
    raise SystemExit(128 + signum)


def main() -> int:
    """Run the benchmark; 0 unless it broke."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"N = {QUICK_SIZES}, a smoke test")
    parser.add_argument("--dialect", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-url", default=PG_URL, help="SQLAlchemy URL of the PostgreSQL")
    parser.add_argument(
        "--durable",
        action="store_true",
        help="let PostgreSQL commits wait for the WAL fsync (slower, same for both sides)",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    sizes = QUICK_SIZES if args.quick else SIZES
    dialects = ["sqlite", "postgresql"] if args.dialect == "both" else [args.dialect]
    if "postgresql" in dialects:
        problem = postgres_problem(args.pg_url)
        if problem is not None:
            print(f"PostgreSQL is not answering ({problem}): measuring SQLite only", flush=True)
            dialects.remove("postgresql")
    print(
        f"Store benchmark: N = {', '.join(f'{n:,}' for n in sizes)}; pages of {PAGE_SIZE}; "
        f"µs per row, store vs bare Core in the same database",
        flush=True,
    )
    started = time.perf_counter()
    parts: list[str] = []
    setup = Setup(pg_url=args.pg_url, durable=args.durable)
    if args.quick:
        setup = Setup(args.pg_url, args.durable, list_seconds=0.0, page_repeats=5)
    # Removed even when the run fails: it holds nothing but the databases.
    with tempfile.TemporaryDirectory(prefix="cuttle-bench-store-") as scratch:
        root = Path(scratch)
        print(f"(SQLite files in {root}, removed at the end)", flush=True)
        for dialect in dialects:
            figures = run_dialect(dialect, sizes, root, setup)
            parts.append(report(dialect, figures, sizes))
    print(f"\n(took {time.perf_counter() - started:.0f} s)", flush=True)
    print(
        "Summary, all from CPU time (steadier than wall time here): create (a transaction "
        "per row), batched (500 a transaction), list (all pages): worst store/bare ratio at "
        "the largest N; growth: worst store per-row cost ratio largest/smallest N over create "
        "and list (bare: the same operation's); deep: worst store deep-page/first-page at the "
        "largest N",
        flush=True,
    )
    print("SUMMARY store " + "; ".join(parts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

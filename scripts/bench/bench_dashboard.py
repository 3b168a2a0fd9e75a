"""Benchmark: the dashboard over 200 projects × 10 environments as the history grows.

For each dialect (a SQLite file in a temporary directory; a PostgreSQL schema of its own,
dropped at the end), one freshly migrated database holds 200 projects, 10 environments and
5 releases per project. Past deployments are inserted directly, in batches of 5,000, spread
over every project × environment cell (about one in ten failed), and the store rebuilds each
project's dashboard cells from that history (`store.dashboard.rebuild_project`, what deleting
a release runs). The dashboard is measured at 10,000 past deployments, then 90,000 more are
added and it is measured again at 100,000 (--quick: 20 × 5 cells, 1,000 then 5,000).

Measured, interleaved so that load from other work on this shared machine falls on all alike:

- cuttle: `store.dashboard.cells(session, space_id)` in a read transaction of its own, as the
  GetDashboard handler calls it: the query, the rows turned into domain cells;
- bare: the same cells by one hand-written SQL statement on a plain DBAPI cursor (no ORM, no
  objects): the same primary-key range on `dashboard_cells` with the same per-cell primary-key
  lookups of the task's state, fetched as tuples. Same rows (checked), same index, same
  database work: the ratio is what the store adds on top of the query itself;
- history scan (reference, not in the ratio): "the latest deployment of every cell and the
  last good one" computed from `deployments` alone with window functions, the query the cells
  table exists to avoid. It has indexes to use, but must still read every past deployment.

Printed: ms per dashboard (median of the repeats) for each side at each history size, the
ratio cuttle/bare, the growth factor 100k/10k of each (1.0: cost independent of history), the
load average, and one SUMMARY line. Not a CI gate.

Run: .venv/bin/python scripts/bench/bench_dashboard.py [--quick] [--dialect sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from benchlib import heading
from sqlalchemy import Engine, create_engine, insert, text
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.store import dashboard
from cuttle.server.store import documents as doc_store
from cuttle.server.store.database import (
    READ_ONLY,
    create_engine_for,
    migrate,
    session_maker,
    sqlite_url,
)
from cuttle.server.store.models import Deployment, Release

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BATCH = 5000
RELEASES_PER_PROJECT = 5


@dataclass(frozen=True)
class Shape:
    """How big a run is."""

    projects: int
    environments: int
    histories: tuple[int, int]
    repeats: int


FULL = Shape(projects=200, environments=10, histories=(10_000, 100_000), repeats=15)
QUICK = Shape(projects=20, environments=5, histories=(1_000, 5_000), repeats=5)

BARE_SQL = """
SELECT c.project_id, c.environment_id, c.tenant_key, c.release_version, c.state,
       (SELECT t.state FROM tasks t WHERE t.id = c.task_id),
       (SELECT t.has_warnings FROM tasks t WHERE t.id = c.task_id),
       c.task_id, c.deployed_ms, c.finished_ms, c.last_success_version, c.last_success_ms
FROM dashboard_cells c
WHERE c.space_id = :space
ORDER BY c.project_id, c.environment_id, c.tenant_key
"""

# The reference: the same answer from the history itself (latest per cell, last success).
SCAN_SQL = """
WITH ranked AS (
  SELECT r.project_id, d.environment_id, d.tenant_id, d.state, d.created_ms, r.version,
         ROW_NUMBER() OVER (PARTITION BY r.project_id, d.environment_id, d.tenant_id
                            ORDER BY d.created_ms DESC, d.id DESC) AS latest,
         ROW_NUMBER() OVER (PARTITION BY r.project_id, d.environment_id, d.tenant_id,
                            d.state = 'success'
                            ORDER BY d.created_ms DESC, d.id DESC) AS latest_of_kind
  FROM deployments d JOIN releases r ON r.id = d.release_id
  WHERE r.space_id = :space
)
SELECT project_id, environment_id, tenant_id, state, created_ms, version,
       latest, latest_of_kind
FROM ranked WHERE latest = 1 OR (latest_of_kind = 1 AND state = 'success')
"""


@contextmanager
def database(dialect: str, root: Path, pg_url: str) -> Iterator[Engine]:
    """A freshly migrated database: a SQLite file under root, or a PostgreSQL schema."""
    if dialect == "sqlite":
        engine = create_engine_for(sqlite_url(root / f"dashboard-{uuid.uuid4().hex}.db"))
        try:
            migrate(engine)
            yield engine
        finally:
            engine.dispose()
        return
    schema = f"bench_{uuid.uuid4().hex}"
    admin = create_engine(pg_url)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        print(f"  (PostgreSQL schema {schema}, dropped at the end)", flush=True)
        try:
            # search_path at connect time puts every table into the schema; %3D is "=".
            engine = create_engine_for(f"{pg_url}?options=-csearch_path%3D{schema}")
            try:
                migrate(engine)
                yield engine
            finally:
                engine.dispose()
        finally:
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


@dataclass
class Model:
    """What the history is about: the space, its projects, environments and releases."""

    space_id: str
    projects: list[str]
    environments: list[str]
    releases: dict[str, list[str]]


def make_model(sessions: sessionmaker[Session], shape: Shape) -> Model:
    """Projects and environments as documents, releases as rows, through the store."""
    with sessions.begin() as s:
        space, _ = doc_store.ensure_space(s)
        projects = [
            doc_store.insert_document(
                s, space_id=space.id, kind="project", name=f"p{i:03}", body={}, references=None
            ).id
            for i in range(shape.projects)
        ]
        environments = [
            doc_store.insert_document(
                s, space_id=space.id, kind="environment", name=f"e{i:02}", body={}, references=None
            ).id
            for i in range(shape.environments)
        ]
    rows: list[dict[str, Any]] = []
    releases: dict[str, list[str]] = {}
    for project in projects:
        for n in range(RELEASES_PER_PROJECT):
            rid = uuid.uuid4().hex
            releases.setdefault(project, []).append(rid)
            rows.append(
                {
                    "id": rid,
                    "space_id": space.id,
                    "project_id": project,
                    "channel": "Default",
                    "version": f"1.{n}.0",
                    "version_key": f"1.{n}.0",
                    "notes": "",
                    "snapshot": {},
                    "created_ms": n,
                    "created_by": "bench",
                    "variables_snapshot_ms": n,
                }
            )
    with sessions.begin() as s:
        s.execute(insert(Release), rows)
    return Model(space.id, projects, environments, releases)


def add_history(
    sessions: sessionmaker[Session], model: Model, count: int, clock: list[int]
) -> None:
    """Insert `count` past deployments in batches, then rebuild every project's cells."""
    rng = random.Random(count)  # noqa: S311 - test data, not secrets
    cells = [(p, e) for p in model.projects for e in model.environments]
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        with sessions.begin() as s:
            s.execute(insert(Deployment), batch)
        batch.clear()

    for i in range(count):
        project, environment = cells[i % len(cells)]
        clock[0] += 1
        state = "failed" if rng.random() < 0.1 else "success"
        batch.append(
            {
                "id": uuid.uuid4().hex,
                "release_id": rng.choice(model.releases[project]),
                "environment_id": environment,
                "tenant_id": None,
                "task_id": None,
                "state": state,
                "created_ms": clock[0],
                "finished_ms": clock[0],
            }
        )
        if len(batch) >= BATCH:
            flush()
    if batch:
        flush()
    with sessions.begin() as s:
        for project in model.projects:
            dashboard.rebuild_project(s, model.space_id, project)
    with sessions.begin() as s:
        # The planner's statistics, as autovacuum would have them after such a load.
        s.execute(text("ANALYZE"))


def measure(
    sides: dict[str, Callable[[], int]], repeats: int, expected_rows: int
) -> dict[str, float]:
    """Median seconds per call of each side, the sides interleaved call by call."""
    spent: dict[str, list[float]] = {name: [] for name in sides}
    for run in sides.values():
        run()  # warm: caches, prepared plans, imports
    for _ in range(repeats):
        for name, run in sides.items():
            started = time.perf_counter()
            rows = run()
            spent[name].append(time.perf_counter() - started)
            if name != "scan" and rows != expected_rows:
                raise RuntimeError(f"{name} returned {rows} cells, expected {expected_rows}")
    return {name: statistics.median(times) for name, times in spent.items()}


def run_dialect(dialect: str, shape: Shape, root: Path, pg_url: str) -> dict[int, dict[str, float]]:
    """Both history sizes on one database; ms per dashboard per side."""
    heading(f"{dialect}: {shape.projects} projects × {shape.environments} environments")
    results: dict[int, dict[str, float]] = {}
    with database(dialect, root, pg_url) as engine:
        sessions = session_maker(engine)
        model = make_model(sessions, shape)
        clock = [10**12]
        total = 0
        cells = shape.projects * shape.environments
        for history in shape.histories:
            started = time.perf_counter()
            add_history(sessions, model, history - total, clock)
            total = history
            print(
                f"  {total:>9,} past deployments (loaded in {time.perf_counter() - started:.1f} s)"
            )

            def store() -> int:
                # As Transactions.read runs the handler's work: a read-only transaction (on
                # SQLite a deferred BEGIN, no write lock), rolled back.
                with sessions() as s:
                    s.connection(execution_options={READ_ONLY: True})
                    try:
                        return len(dashboard.cells(s, model.space_id))
                    finally:
                        s.rollback()

            def bare() -> int:
                raw = engine.raw_connection()
                try:
                    cursor = raw.cursor()
                    sql, params = _paramstyle(dialect, BARE_SQL, model.space_id)
                    cursor.execute(sql, params)
                    found = len(cursor.fetchall())
                    cursor.close()
                    raw.commit()
                finally:
                    raw.close()
                return found

            def scan() -> int:
                with engine.connect() as connection:
                    rows = connection.execute(text(SCAN_SQL), {"space": model.space_id}).all()
                return len(rows)

            medians = measure({"cuttle": store, "bare": bare, "scan": scan}, shape.repeats, cells)
            results[history] = medians
            cuttle_ms, bare_ms = medians["cuttle"] * 1e3, medians["bare"] * 1e3
            print(
                f"  {'':>9}   cuttle {cuttle_ms:8.2f} ms   bare {bare_ms:8.2f} ms   ratio "
                f"{cuttle_ms / bare_ms:5.2f}x   (history scan {medians['scan'] * 1e3:8.2f} ms)",
                flush=True,
            )
    return results


def _paramstyle(dialect: str, sql: str, space_id: str) -> tuple[str, Any]:
    # sqlite3 takes :name; psycopg takes %(name)s.
    if dialect == "sqlite":
        return sql, {"space": space_id}
    return sql.replace(":space", "%(space)s"), {"space": space_id}


def postgres_problem(pg_url: str) -> str | None:
    """Why PostgreSQL cannot be used; None when it answers."""
    engine = create_engine(pg_url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:  # noqa: BLE001 - any failure means "measure SQLite only"
        return str(error).splitlines()[0]
    finally:
        engine.dispose()
    return None


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds through the finally blocks, which drop the PostgreSQL schema.
    raise SystemExit(128 + signum)


def main() -> int:
    """Run the benchmark; 0 unless it broke."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    parser.add_argument("--dialect", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--pg-url", default=PG_URL, help="SQLAlchemy URL of the PostgreSQL")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    shape = QUICK if args.quick else FULL
    dialects = ["sqlite", "postgresql"] if args.dialect == "both" else [args.dialect]
    if "postgresql" in dialects:
        problem = postgres_problem(args.pg_url)
        if problem is not None:
            print(f"PostgreSQL is not answering ({problem}): measuring SQLite only", flush=True)
            dialects.remove("postgresql")
    load = os.getloadavg()
    print(
        f"Dashboard benchmark: {shape.projects} × {shape.environments} cells, history "
        f"{' then '.join(f'{h:,}' for h in shape.histories)}; load average {load[0]:.2f} "
        f"on {os.cpu_count()} cores",
        flush=True,
    )
    small, large = shape.histories
    parts: list[str] = []
    with tempfile.TemporaryDirectory(prefix="cuttle-bench-dashboard-") as scratch:
        print(f"(SQLite files in {scratch}, removed at the end)", flush=True)
        for dialect in dialects:
            found = run_dialect(dialect, shape, Path(scratch), args.pg_url)
            ratio = found[large]["cuttle"] / found[large]["bare"]
            growth = found[large]["cuttle"] / found[small]["cuttle"]
            bare_growth = found[large]["bare"] / found[small]["bare"]
            scan_growth = found[large]["scan"] / found[small]["scan"]
            heading(f"{dialect}: growth from {small:,} to {large:,} past deployments")
            print(
                f"  cuttle x{growth:.2f}   bare x{bare_growth:.2f}   history scan "
                f"x{scan_growth:.2f}   (1.00: cost independent of history)",
                flush=True,
            )
            parts.append(
                f"{dialect} ratio x{ratio:.2f} ({found[large]['cuttle'] * 1e3:.1f} ms vs "
                f"{found[large]['bare'] * 1e3:.1f} ms) growth x{growth:.2f} "
                f"(bare x{bare_growth:.2f}, history scan x{scan_growth:.2f})"
            )
    load = os.getloadavg()
    print(f"\n(load average at the end {load[0]:.2f})", flush=True)
    print("SUMMARY dashboard " + "; ".join(parts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: 1,000 deployments queued at once, a task cap of 5, claimed from PostgreSQL.

On the PostgreSQL at 127.0.0.1:5432 (database `test`), in a schema of its own migrated to head
and dropped at the end: 1,000 queued deployment tasks (each its own project and environment,
so only the cap holds them back) are inserted at once. One node then drains the queue: claim,
and once the claim has started its tasks, finish them (one UPDATE marking them `success`, the
same statement on both sides), and claim again, until every task has been started. The figure
is tasks claimed and started per second, over the whole drain.

- cuttle: `store.task_queue.claim(session, node, now_ms, lease_ms, task_cap=5)`, one
  transaction per claim, as the engine's claim loop calls it: it adopts tasks whose owner's
  lease ran out, counts the node's busy slots, reads which project/environment/tenant started
  deployments hold, looks ahead at up to 200 queued tasks (reading only the three fields of
  each spec that make its concurrency key, without locking them), starts up to the free slots
  with one guarded UPDATE ... RETURNING (a row another node started first is not returned) and
  writes why the others wait, one statement per distinct reason.
- bare: the least a claim that honours a cap must do, on the same `tasks` table, the same
  indexes and the same number of tasks, one transaction per claim: `SELECT count(*)` of the
  node's running tasks, `SELECT id ... WHERE state = 'queued' ORDER BY created_ms, id LIMIT
  free FOR UPDATE SKIP LOCKED`, and one `UPDATE ... SET state = 'running', owner_node, lease,
  started_ms WHERE id IN (...)` through a plain DBAPI cursor. It does the same row locking and
  the same writes for the started tasks; what it skips (adoption, the one-per-project rule, the
  waiting reasons) is what the ratio prices.

Rounds alternate cuttle, bare, cuttle, bare on fresh rows (the table is emptied and VACUUM
ANALYZEd between rounds), so load from other work on this shared machine falls on both alike;
the best round of each side counts. Commits do not wait for the WAL fsync (same for both).
Printed: claims/s and tasks started/s per side, the ratio of the times to drain the queue,
the load average, and one SUMMARY line. Not a CI gate.

Run: .venv/bin/python scripts/bench/bench_task_claims.py [--quick] [--tasks N] [--cap C]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from benchlib import heading
from sqlalchemy import Engine, create_engine, insert, text
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.store import task_queue
from cuttle.server.store.database import create_engine_for, migrate, session_maker
from cuttle.server.store.models import Task

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
NODE = "bench-node"
LEASE_MS = 60_000

BARE_COUNT = (
    "SELECT count(*) FROM tasks WHERE owner_node = %(node)s AND state IN ('running', 'cancelling')"
)
BARE_PICK = (
    "SELECT id FROM tasks WHERE state = 'queued' ORDER BY created_ms, id"
    " LIMIT %(free)s FOR UPDATE SKIP LOCKED"
)
BARE_START = (
    "UPDATE tasks SET state = 'running', owner_node = %(node)s, lease_expires_ms = %(lease)s,"
    " started_ms = coalesce(started_ms, %(now)s), waiting_reason = ''"
    " WHERE id = ANY(%(ids)s) AND state = 'queued'"
)
FINISH = "UPDATE tasks SET state = 'success', finished_ms = :now WHERE id = ANY(:ids)"


@dataclass(frozen=True)
class Drain:
    """One side draining the queue once."""

    seconds: float
    claims: int
    started: int


@contextmanager
def schema(pg_url: str) -> Iterator[Engine]:
    """A PostgreSQL schema of our own, migrated to head, dropped at the end."""
    name = f"bench_{uuid.uuid4().hex}"
    admin = create_engine(pg_url)
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{name}"'))
        print(f"(PostgreSQL schema {name}, dropped at the end)", flush=True)
        try:
            # %3D is "=", %20 separates options: the schema, and commits without the fsync wait.
            options = f"-csearch_path%3D{name}%20-csynchronous_commit%3Doff"
            engine = create_engine_for(f"{pg_url}?options={options}")
            try:
                migrate(engine)
                yield engine
            finally:
                engine.dispose()
        finally:
            with admin.begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
    finally:
        admin.dispose()


def refill(engine: Engine, sessions: sessionmaker[Session], count: int) -> None:
    """Empty the tasks table and queue `count` deployments at once, each its own cell."""
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM tasks"))
    base = int(time.time() * 1000)
    rows = [
        {
            "id": uuid.uuid4().hex,
            "kind": "deployment",
            "description": f"Deploy p{i} to e{i}",
            "state": "queued",
            # What the claim reads of a deployment's spec: its project, environment, tenant.
            "spec": {
                "kind": "deployment",
                "project_id": f"p{i}",
                "environment_id": f"e{i}",
                "tenant_id": None,
            },
            "created_ms": base + i,
            "started_ms": None,
            "finished_ms": None,
            "owner_node": None,
            "cancel_requested": False,
            "cancel_reason": "",
            "log_count": 0,
            "waiting_reason": "",
            "has_warnings": False,
            "reason": "",
            "lease_expires_ms": None,
        }
        for i in range(count)
    ]
    with sessions.begin() as s:
        s.execute(insert(Task), rows)
    # VACUUM cannot run in a transaction: the rows of the last round go, statistics are fresh.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE tasks"))


def drain(engine: Engine, claim: Callable[[int], list[str]], count: int, deadline: float) -> Drain:
    """Claim until `count` tasks were started, finishing each claim's tasks before the next."""
    started = claims = 0
    began = time.perf_counter()
    while started < count:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"drain ran out of time after {started} of {count} tasks")
        ids = claim(int(time.time() * 1000))
        claims += 1
        started += len(ids)
        if ids:
            with engine.begin() as connection:
                connection.execute(text(FINISH), {"now": int(time.time() * 1000), "ids": ids})
    return Drain(time.perf_counter() - began, claims, started)


def main() -> int:
    """Run the benchmark; 0 unless it broke."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 tasks, one round each")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--cap", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="rounds per side")
    parser.add_argument("--pg-url", default=PG_URL)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    count, rounds = (50, 1) if args.quick else (args.tasks, args.rounds)
    problem = _postgres_problem(args.pg_url)
    if problem is not None:
        print(f"PostgreSQL is not answering ({problem}): nothing to measure", flush=True)
        print("SUMMARY claims skipped: no PostgreSQL, no ratio", flush=True)
        return 0
    print(
        f"Claim benchmark: {count:,} deployments queued at once, task cap {args.cap}, one node; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores",
        flush=True,
    )
    best: dict[str, Drain] = {}
    with schema(args.pg_url) as engine:
        sessions = session_maker(engine)

        def cuttle(now: int) -> list[str]:
            with sessions.begin() as s:
                claimed = task_queue.claim(
                    s, NODE, now_ms=now, lease_ms=LEASE_MS, task_cap=args.cap
                )
            return list(claimed.started)

        def bare(now: int) -> list[str]:
            raw = engine.raw_connection()
            try:
                cursor = raw.cursor()
                cursor.execute(BARE_COUNT, {"node": NODE})
                row = cursor.fetchone()
                free = args.cap - int(row[0] if row else 0)
                ids: list[str] = []
                if free > 0:
                    cursor.execute(BARE_PICK, {"free": free})
                    ids = [r[0] for r in cursor.fetchall()]
                if ids:
                    cursor.execute(
                        BARE_START,
                        {"node": NODE, "lease": now + LEASE_MS, "now": now, "ids": ids},
                    )
                cursor.close()
                raw.commit()
            finally:
                raw.close()
            return ids

        sides: dict[str, Callable[[int], list[str]]] = {"cuttle": cuttle, "bare": bare}
        for n in range(rounds):
            for name, claim in sides.items():
                refill(engine, sessions, count)
                done = drain(engine, claim, count, time.perf_counter() + 600)
                print(
                    f"  round {n + 1} {name:<6} {done.seconds:7.2f} s   {done.claims:>5} claims "
                    f"{done.claims / done.seconds:8.1f}/s   {done.started / done.seconds:8.1f} "
                    f"tasks started/s",
                    flush=True,
                )
                if name not in best or done.seconds < best[name].seconds:
                    best[name] = done
    c, b = best["cuttle"], best["bare"]
    heading("best round of each side")
    print(
        f"  cuttle {c.started / c.seconds:8.1f} tasks/s ({c.seconds * 1e3 / c.claims:6.2f} ms a "
        f"claim)   bare {b.started / b.seconds:8.1f} tasks/s ({b.seconds * 1e3 / b.claims:6.2f} "
        f"ms a claim)   time ratio {c.seconds / b.seconds:5.2f}x",
        flush=True,
    )
    print(f"\n(load average at the end {os.getloadavg()[0]:.2f})", flush=True)
    print(
        "SUMMARY claims "
        + json.dumps(
            {
                "tasks": count,
                "cap": args.cap,
                "cuttle_tasks_per_s": round(c.started / c.seconds, 1),
                "bare_tasks_per_s": round(b.started / b.seconds, 1),
            }
        )
        + f" ratio x{c.seconds / b.seconds:.2f}",
        flush=True,
    )
    return 0


def _postgres_problem(pg_url: str) -> str | None:
    engine = create_engine(pg_url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:  # noqa: BLE001 - any failure means "nothing to measure"
        return str(error).splitlines()[0]
    finally:
        engine.dispose()
    return None


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SystemExit unwinds through the finally blocks, which drop the schema.
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())

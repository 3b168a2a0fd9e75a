"""Two nodes on one PostgreSQL: a change on one wakes the task's followers on the other."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import make_url

from cuttle.server.engine.notifications import TaskSignals
from cuttle.server.store.change_feed import PostgresChangeFeed, conninfo
from tests.unit.server.store.conftest import PG_URL, _postgres_problem

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]

DSN = conninfo(make_url(PG_URL))


def _node() -> tuple[TaskSignals, PostgresChangeFeed]:
    signals = TaskSignals()
    feed = PostgresChangeFeed(DSN, signals.changed_elsewhere, signals.maybe_missed)
    signals.publish_to(feed.publish)
    return signals, feed


def test_conninfo_drops_the_driver_and_keeps_the_options() -> None:
    url = make_url("postgresql+psycopg://u:p@h:5433/db?options=-csearch_path%3Ds")
    assert conninfo(url) == "postgresql://u:p@h:5433/db?options=-csearch_path%3Ds"


def test_a_change_on_one_node_wakes_followers_on_the_other() -> None:
    problem = _postgres_problem()
    if problem is not None:
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not answering: {problem}")
    first, second = f"t-{uuid.uuid4().hex}", f"t-{uuid.uuid4().hex}"

    async def scenario() -> None:
        (a_signals, a_feed), (b_signals, b_feed) = _node(), _node()
        await a_feed.start()
        await b_feed.start()
        try:
            async with asyncio.timeout(20):
                await a_feed.listening.wait()
                await b_feed.listening.wait()
            with (
                a_signals.subscribe(first) as on_a,
                a_signals.subscribe(second) as second_on_a,
                b_signals.subscribe(first) as on_b,
                b_signals.subscribe(f"t-{uuid.uuid4().hex}") as unrelated_on_b,
            ):
                # Listening began before these subscriptions: nothing was missed since.
                seen_a, seen_b, seen_unrelated = on_a.version, on_b.version, unrelated_on_b.version
                a_signals.notify(first)
                assert await on_b.wait_past(seen_b, 20), "node B never heard of A's change"
                assert on_b.take_unexplained(), "B's follower must look at the store"
                # B's change comes back to A; A's own change, sent earlier on the same channel,
                # was heard by A first and not taken for another node's.
                seen_second = second_on_a.version
                b_signals.notify(second)
                assert await second_on_a.wait_past(seen_second, 20)
                assert on_a.version == seen_a + 1, "A took its own change for another node's"
                assert unrelated_on_b.version == seen_unrelated
        finally:
            await a_feed.stop()
            await b_feed.stop()

    asyncio.run(scenario())

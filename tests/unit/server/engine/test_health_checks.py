"""Health checks against a real store: the policy's times decide unreachable vs unavailable."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.domain.scripts import AgentInfo
from cuttle.server.engine.health import HealthChecker, PolicyTimes, due_machines
from cuttle.server.errors import Unreachable
from cuttle.server.store import documents as doc_store
from cuttle.server.store import machines as machine_store
from cuttle.server.store.records import MachineRecord, now_ms
from cuttle.server.store.transactions import Transactions
from tests.unit.server.machine_rows import add_machine


def _setup(session: Session, policies: dict[str, dict[str, float]], machines: list[str]) -> None:
    space, _ = doc_store.ensure_space(session)
    for name, body in policies.items():
        doc_store.insert_document(
            session,
            space_id=space.id,
            kind="machine_policy",
            name=name,
            body={"name": name, **body},
            references=None,
        )
    for name in machines:
        add_machine(session, name)


class _Agent:
    """Stands in for a TentacleClient: answers GetInfo, or fails as a stopped agent does."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.up = True

    async def get_info(self, timeout: float | None = None) -> AgentInfo:
        if not self.up:
            raise Unreachable(self.name, "connection refused")
        return AgentInfo("1.0", "Linux", self.name, 10**9, "T")


class _Connections:
    """The two things HealthChecker asks of Connections, for listening agents."""

    def __init__(self, *agents: _Agent) -> None:
        self.agents = {a.name: a for a in agents}

    def connected(self, name: str) -> bool | None:
        return None

    async def client(self, name: str) -> Any:
        return self.agents[name]


def _check(checker: HealthChecker, name: str) -> MachineRecord:
    (record,) = asyncio.run(checker.check([name]))
    return record


def test_failures_count_as_unavailable_only_after_the_policy_time(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        _setup(
            session,
            {
                "Patient": {"unavailable_after_seconds": 3600},
                "Strict": {"unavailable_after_seconds": 0},
            },
            ["patient-01", "strict-01", "default-01"],
        )
        machine_store.update(session, "patient-01", policy="Patient")
        machine_store.update(session, "strict-01", policy="Strict")
    agents = [_Agent("patient-01"), _Agent("strict-01"), _Agent("default-01")]
    tx = Transactions(sessions)
    # No policy: the server's setting applies (a day here).
    checker = HealthChecker(tx, _Connections(*agents), unavailable_after=86400)
    try:
        assert {m.name: m.health for m in asyncio.run(checker.check())} == {
            "patient-01": "healthy",
            "strict-01": "healthy",
            "default-01": "healthy",
        }
        for agent in agents:
            agent.up = False
        first = {m.name: m for m in asyncio.run(checker.check())}
        assert {name: m.health for name, m in first.items()} == {
            "patient-01": "unreachable",
            "strict-01": "unavailable",
            "default-01": "unreachable",
        }
        assert all("connection refused" in m.health_message for m in first.values())
        since = first["patient-01"].unreachable_since_ms
        assert since is not None
        again = _check(checker, "patient-01")
        # The run of failures keeps its start; still within the policy's hour.
        assert (again.health, again.unreachable_since_ms) == ("unreachable", since)

        agents[0].up = True
        back = _check(checker, "patient-01")
        assert (back.health, back.unreachable_since_ms, back.health_message) == (
            "healthy",
            None,
            "",
        )
    finally:
        tx.close()


def test_an_unreachable_machine_is_checked_again_when_it_would_turn_unavailable(
    sessions: sessionmaker[Session],
) -> None:
    now = now_ms()
    with sessions.begin() as session:
        _setup(
            session,
            {"Hourly": {"health_check_interval_seconds": 3600, "unavailable_after_seconds": 60}},
            ["soon-01", "overdue-01", "fine-01"],
        )
        for name in ("soon-01", "overdue-01", "fine-01"):
            machine_store.update(session, name, policy="Hourly")
        # Failing for 50 s of its 60: due in 10 s, not in an hour.
        machine_store.update_health(
            session,
            "soon-01",
            health="unreachable",
            checked_ms=now - 1_000,
            unreachable_since_ms=now - 50_000,
        )
        # Failing for 61 s: due now, although its last check was a second ago.
        machine_store.update_health(
            session,
            "overdue-01",
            health="unreachable",
            checked_ms=now - 1_000,
            unreachable_since_ms=now - 61_000,
        )
        machine_store.update_health(session, "fine-01", health="healthy", checked_ms=now - 1_000)
    with sessions() as session:
        due, wait = due_machines(session, PolicyTimes(interval=3600, unavailable_after=300))
    assert [(m.name, after) for m, after in due] == [("overdue-01", 60.0)]
    assert 5 < wait <= 10

"""Health checks: ask each agent what it is; record OS, disk, version, or why it is unreachable.

A failed check makes a machine "unreachable" and only "unavailable" once its checks have failed
for the machine policy's `unavailable_after_seconds` (domain/machine_health.py). An unreachable
machine is checked again when that time is up, so the state changes when the policy says, not
one whole interval later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy.orm import Session

from cuttle.server.comms.registry import Connections
from cuttle.server.domain.machine_health import after_check, becomes_unavailable_at_ms
from cuttle.server.errors import AgentError, NotFound
from cuttle.server.model.documents import MachinePolicy
from cuttle.server.store import documents as doc_store
from cuttle.server.store import machines as machine_store
from cuttle.server.store.records import MachineRecord, now_ms
from cuttle.server.store.transactions import Transactions

log = structlog.get_logger(__name__)

MAX_SLEEP = 30.0
MIN_SLEEP = 0.2
# For a stored policy body without the field (bodies are stored with their defaults, so rare).
_MODEL_INTERVAL = float(MachinePolicy.model_fields["health_check_interval_seconds"].default)
_MODEL_UNAVAILABLE_AFTER = float(MachinePolicy.model_fields["unavailable_after_seconds"].default)


@dataclass(frozen=True)
class PolicyTimes:
    """The two times of a machine policy that health checking applies, in seconds."""

    interval: float
    unavailable_after: float


@dataclass(frozen=True)
class _Probe:
    """What asking the agent gave: its facts, or why it could not be asked."""

    succeeded: bool
    message: str = ""
    version: str | None = None
    os: str | None = None
    free_disk: int | None = None


class HealthChecker:
    """Checks machines on demand and on a schedule."""

    def __init__(
        self,
        tx: Transactions,
        connections: Connections,
        timeout: float = 10.0,
        *,
        unavailable_after: float = 300.0,
    ) -> None:
        self._tx = tx
        self._connections = connections
        self._timeout = timeout
        # For machines without a machine policy; a policy's own value wins.
        self._unavailable_after = unavailable_after

    async def check(self, names: Sequence[str] = ()) -> list[MachineRecord]:
        """Check the named machines (all when none are named) in parallel."""
        machines, policies = await self._tx.read(
            lambda s: (machine_store.all_machines(s, names=names), _policy_times(s))
        )
        if names and len(machines) < len(set(n.lower() for n in names)):
            found = {m.name.lower() for m in machines}
            missing = sorted(n for n in names if n.lower() not in found)
            raise NotFound(f"no machine named {', '.join(missing)}")
        return list(
            await asyncio.gather(
                *(self._check_one(m, self._unavailable_after_for(m, policies)) for m in machines)
            )
        )

    def _unavailable_after_for(
        self, machine: MachineRecord, policies: dict[str, PolicyTimes]
    ) -> float:
        policy = policies.get(doc_store.name_key(machine.policy or ""))
        return self._unavailable_after if policy is None else policy.unavailable_after

    async def _check_one(self, machine: MachineRecord, unavailable_after: float) -> MachineRecord:
        probe = await self._probe(machine.name)
        return await self._tx.run(lambda s: self._record(s, machine.name, probe, unavailable_after))

    async def _probe(self, name: str) -> _Probe:
        if self._connections.connected(name) is False:
            return _Probe(False, "the polling Tentacle is not connected to this server")
        try:
            info = await (await self._connections.client(name)).get_info(timeout=self._timeout)
        except (AgentError, NotFound) as exc:
            log.info("health_check_failed", machine=name, error=str(exc))
            return _Probe(False, str(exc))
        except TimeoutError:
            return _Probe(False, f"{name} is unreachable: timed out")
        return _Probe(True, "", info.version, info.os, info.free_disk_bytes)

    def _record(
        self, session: Session, name: str, probe: _Probe, unavailable_after: float
    ) -> MachineRecord:
        # Read and write in one transaction: the run of failures continues from what is stored.
        before = machine_store.get_by_name(session, name)
        checked = now_ms()
        outcome = after_check(
            succeeded=probe.succeeded,
            checked_ms=checked,
            unreachable_since_ms=before.unreachable_since_ms,
            unavailable_after_seconds=unavailable_after,
        )
        after = machine_store.update_health(
            session,
            name,
            health=outcome.health,
            message=probe.message,
            tentacle_version=probe.version,
            os=probe.os,
            free_disk_bytes=probe.free_disk,
            checked_ms=checked,
            unreachable_since_ms=outcome.unreachable_since_ms,
        )
        if after.health != before.health:
            log.info(
                "machine_health_changed",
                machine=name,
                health=after.health,
                previous=before.health,
                reason=probe.message,
            )
        return after

    async def run_forever(self, interval: float) -> None:
        """Check each enabled machine when its machine policy's interval (default: interval) is up.

        Sleeps until the next machine is due (at most MAX_SLEEP, so new machines and policy
        changes are seen), not a fixed period: policies may ask for minutes or for days.
        """
        default = PolicyTimes(interval, self._unavailable_after)
        while True:
            try:
                due, wait = await self._tx.read(lambda s: due_machines(s, default))
                if due:
                    await asyncio.gather(*(self._check_one(m, after) for m, after in due))
            except Exception:
                log.exception("scheduled_health_check_failed")
                wait = MAX_SLEEP
            await asyncio.sleep(wait)


def _policy_times(session: Session) -> dict[str, PolicyTimes]:
    """Each machine policy's times, by the policy's name key."""
    space = doc_store.get_space(session, doc_store.DEFAULT_SPACE)
    result = {}
    for record in doc_store.all_of_kind(session, space.id, "machine_policy"):
        body = record.body
        result[doc_store.name_key(record.name)] = PolicyTimes(
            float(body.get("health_check_interval_seconds", _MODEL_INTERVAL)),
            float(body.get("unavailable_after_seconds", _MODEL_UNAVAILABLE_AFTER)),
        )
    return result


def due_machines(
    session: Session, default: PolicyTimes
) -> tuple[list[tuple[MachineRecord, float]], float]:
    """The machines due for a check now, each with its unavailable_after, and the next wait."""
    policies = _policy_times(session)
    now = now_ms()
    due: list[tuple[MachineRecord, float]] = []
    wait = MAX_SLEEP
    for machine in machine_store.all_machines(session):
        if not machine.enabled:
            continue
        times = policies.get(doc_store.name_key(machine.policy or ""), default)
        # A machine never checked counts from its registration: not all at once at start-up.
        last = machine.last_health_check_ms or machine.registered_ms
        due_ms = last + int(times.interval * 1000)
        if machine.health == "unreachable":
            # Look again when it would turn unavailable: the policy's time, not the next interval.
            threshold = becomes_unavailable_at_ms(
                machine.unreachable_since_ms, times.unavailable_after
            )
            if threshold is not None:
                due_ms = min(due_ms, max(threshold, last))
        remaining = (due_ms - now) / 1000
        if remaining <= 0:
            due.append((machine, times.unavailable_after))
            remaining = times.interval
        wait = min(wait, remaining)
    return due, max(MIN_SLEEP, wait)

"""Health checks: ask each agent what it is; record OS, disk, version, or why it is unreachable."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog
from sqlalchemy.orm import Session

from cuttle.server.comms.registry import Connections
from cuttle.server.engine.transactions import Transactions
from cuttle.server.errors import AgentError, NotFound
from cuttle.server.store import documents as doc_store
from cuttle.server.store import machines as machine_store
from cuttle.server.store.records import MachineRecord, now_ms

log = structlog.get_logger(__name__)


class HealthChecker:
    """Checks machines on demand and on a schedule."""

    def __init__(self, tx: Transactions, connections: Connections, timeout: float = 10.0) -> None:
        self._tx = tx
        self._connections = connections
        self._timeout = timeout

    async def check(self, names: Sequence[str] = ()) -> list[MachineRecord]:
        """Check the named machines (all when none are named) in parallel."""
        machines = await self._tx.read(lambda s: machine_store.all_machines(s, names=names))
        if names and len(machines) < len(set(n.lower() for n in names)):
            found = {m.name.lower() for m in machines}
            missing = sorted(n for n in names if n.lower() not in found)
            raise NotFound(f"no machine named {', '.join(missing)}")
        return list(await asyncio.gather(*(self._check_one(m) for m in machines)))

    async def _check_one(self, machine: MachineRecord) -> MachineRecord:
        name = machine.name
        if self._connections.connected(name) is False:
            return await self._record(
                name, "unavailable", "the polling Tentacle is not connected to this server"
            )
        try:
            info = await self._connections.client(name).get_info(timeout=self._timeout)
        except (AgentError, NotFound) as exc:
            log.info("health_check_failed", machine=name, error=str(exc))
            return await self._record(name, "unavailable", str(exc))
        except TimeoutError:
            return await self._record(name, "unavailable", f"{name} is unreachable: timed out")
        return await self._record(
            name,
            "healthy",
            "",
            version=info.version,
            os=info.os,
            free_disk=info.free_disk_bytes,
        )

    async def _record(
        self,
        name: str,
        health: str,
        message: str,
        *,
        version: str | None = None,
        os: str | None = None,
        free_disk: int | None = None,
    ) -> MachineRecord:
        return await self._tx.run(
            lambda s: machine_store.update_health(
                s,
                name,
                health=health,  # type: ignore[arg-type]
                message=message,
                tentacle_version=version,
                os=os,
                free_disk_bytes=free_disk,
            )
        )

    async def run_forever(self, interval: float) -> None:
        """Check each enabled machine when its machine policy's interval (default: interval) is up.

        Sleeps until the next machine is due (at most MAX_SLEEP, so new machines and policy
        changes are seen), not a fixed period: policies may ask for minutes or for days.
        """
        while True:
            try:
                due, wait = await self._tx.read(lambda s: _due_machines(s, interval))
                if due:
                    await asyncio.gather(*(self._check_one(m) for m in due))
            except Exception:
                log.exception("scheduled_health_check_failed")
                wait = MAX_SLEEP
            await asyncio.sleep(wait)


MAX_SLEEP = 30.0
MIN_SLEEP = 0.2


def _due_machines(session: Session, default_interval: float) -> tuple[list[MachineRecord], float]:
    """The machines whose check is due now, and how long until the next one is."""
    space = doc_store.get_space(session, doc_store.DEFAULT_SPACE)
    intervals = {
        doc_store.name_key(record.name): float(
            record.body.get("health_check_interval_seconds", default_interval)
        )
        for record in doc_store.all_of_kind(session, space.id, "machine_policy")
    }
    now = now_ms()
    due: list[MachineRecord] = []
    wait = MAX_SLEEP
    for machine in machine_store.all_machines(session):
        if not machine.enabled:
            continue
        interval = intervals.get(doc_store.name_key(machine.policy or ""), default_interval)
        # A machine never checked counts from its registration: not all at once at start-up.
        last = machine.last_health_check_ms or machine.registered_ms
        remaining = last / 1000 + interval - now / 1000
        if remaining <= 0:
            due.append(machine)
            remaining = interval
        wait = min(wait, remaining)
    return due, max(MIN_SLEEP, wait)

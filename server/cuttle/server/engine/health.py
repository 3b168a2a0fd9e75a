"""Health checks: ask each agent what it is; record OS, disk, version, or why it is unreachable."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from cuttle.server.comms.registry import Connections
from cuttle.server.engine.transactions import Transactions
from cuttle.server.errors import AgentError, NotFound
from cuttle.server.store import machines as machine_store
from cuttle.server.store.records import MachineRecord

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
        """Check every machine every `interval` seconds."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.check()
            except Exception:
                log.exception("scheduled_health_check_failed")

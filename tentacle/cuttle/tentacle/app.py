"""`tentacle run`: the agent's components, started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import sys
from pathlib import Path

import structlog

from cuttle.protocol.pinning import PinnedPeers
from cuttle.tentacle.comms.listening import ListeningServer
from cuttle.tentacle.comms.polling import PollingClient, PollingSettings, PollingTarget
from cuttle.tentacle.config import InstanceHome, TentacleConfig
from cuttle.tentacle.execution.manager import ScriptManager, become_subreaper
from cuttle.tentacle.execution.script_user import (
    check_workspaces,
    may_execute,
    script_user_for,
    workspaces_root,
)
from cuttle.tentacle.files.transfer import UploadStore
from cuttle.tentacle.packages.cache import PackageCache, cache_root
from cuttle.tentacle.packages.deploy import DeploySettings, applications_directory
from cuttle.tentacle.packages.extract import ExtractionLimits
from cuttle.tentacle.packages.receive import PackageReceiver
from cuttle.tentacle.services.handlers import TentacleHandlers

log = structlog.get_logger(__name__)


class TentacleAgent:
    """Owns the script manager, the transport for the configured comms style, and the loops."""

    def __init__(self, home: InstanceHome) -> None:
        self._home = home
        self._config = home.load()
        self._config_mtime = home.config_path.stat().st_mtime_ns
        self._identity = home.identity()
        script_user = script_user_for(self._config.run_scripts_as)
        workspaces = workspaces_root(home.path, self._config.workspaces_dir)
        if script_user is not None:
            check_workspaces(workspaces, script_user)
            mode = stat.S_IMODE(home.path.stat().st_mode)
            if mode & 0o077:
                # Keys, journals and every ticket live here: the scripts' user gets nothing.
                os.chmod(home.path, 0o700)
                log.warning("home_mode_tightened", home=str(home.path), was=f"{mode:04o}")
            if not may_execute(sys.executable, script_user):
                # Bash scripts run; Python scripts and get_octopusvariable need the interpreter.
                log.warning(
                    "script_user_cannot_run_python",
                    user=script_user.name,
                    python=sys.executable,
                )
        uploads = UploadStore(home.path / "uploads")
        self.package_cache = PackageCache(
            cache_root(home.path),
            max_bytes=self._config.package_cache_max_bytes,
            min_free_bytes=self._config.package_cache_min_free_bytes,
        )
        applications = applications_directory(
            home.path, self._config.applications_directory, workspaces, script_user
        )
        self._manager = ScriptManager(
            home.path,
            script_user=script_user,
            workspaces=workspaces,
            packages=DeploySettings(
                self.package_cache,
                applications,
                keep=self._config.package_retention_keep,
                limits=ExtractionLimits(
                    max_total_bytes=self._config.package_max_extracted_bytes,
                    max_entries=self._config.package_max_entries,
                    max_ratio=float(self._config.package_max_ratio),
                ),
            ),
        )
        self._handlers = TentacleHandlers(
            self._manager,
            uploads,
            PackageReceiver(self.package_cache),
            thumbprint=self._identity.thumbprint,
            comms_style=self._config.comms_style,
            disk_path=str(home.path),
        )
        self._peers = PinnedPeers(self._identity)
        self._apply_trust(self._config)
        self._listening: ListeningServer | None = None
        self._polling: PollingClient | None = None
        self._loops: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Recover tickets, then open the transport and background loops."""
        become_subreaper()
        await self._manager.recover()
        ports: dict[str, int] = {}
        if self._config.comms_style == "listening":
            self._listening = ListeningServer(
                self._handlers, self._peers, self._config.listen_host, self._config.port
            )
            ports["listening"] = await self._listening.start()
        else:
            await self._start_polling()
        self._home.write_ports(ports)
        self._loops.append(asyncio.create_task(self._watch_config(), name="config-watch"))
        self._loops.append(asyncio.create_task(self._clean_workspaces(), name="cleaner"))
        log.info(
            "tentacle_started",
            home=str(self._home.path),
            comms_style=self._config.comms_style,
            thumbprint=self._identity.thumbprint,
            **ports,
        )

    async def stop(self) -> None:
        """Stop serving, stop the loops, and close the manager (scripts keep their journals)."""
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._polling is not None:
            await self._polling.stop()
        if self._listening is not None:
            await self._listening.stop(grace=2.0)
        await self._manager.close()
        log.info("tentacle_stopped")

    async def _start_polling(self) -> None:
        config = self._config
        if config.server is None or not config.server.polling_address:
            log.warning("polling_not_configured", hint="run tentacle register-with first")
            return
        settings = PollingSettings(
            connections=config.polling_connections,
            heartbeat_interval=config.heartbeat_interval_seconds,
            heartbeat_timeout=config.heartbeat_timeout_seconds,
            reconnect_max_delay=config.reconnect_max_delay_seconds,
        )
        self._polling = PollingClient(
            self._handlers, self._identity, self._polling_target, settings
        )
        await self._polling.start()

    def _polling_target(self) -> PollingTarget:
        config = self._config
        address = config.server.polling_address if config.server else ""
        return PollingTarget(address, config.trusted_certificates_pem())

    def _apply_trust(self, config: TentacleConfig) -> None:
        self._peers.set_trusted(
            {
                server.thumbprint: server.certificate_pem.encode()
                for server in config.trusted_servers
                if server.certificate_pem
            }
        )

    async def _watch_config(self) -> None:
        # tentacle configure / register-with / update-trust edit tentacle.json while we run;
        # trust changes must apply within a second, so the file is checked on a short interval.
        while True:
            await asyncio.sleep(self._config.config_reload_interval_seconds)
            try:
                mtime = self._home.config_path.stat().st_mtime_ns
                if mtime == self._config_mtime:
                    continue
                config = self._home.load()
            except (OSError, ValueError) as exc:
                log.warning("config_reload_failed", error=str(exc))
                continue
            self._config_mtime = mtime
            old = self._config
            if (old.run_scripts_as, old.workspaces_dir) != (
                config.run_scripts_as,
                config.workspaces_dir,
            ):
                # Who scripts run as is fixed for the life of the process (a ticket's files
                # are laid out for it): a change applies at the next start.
                log.warning("run_scripts_as_changed", applies="at the next start")
            self._config = config
            self._apply_trust(config)
            log.info("config_reloaded", trusted=sorted(config.trusted_thumbprints()))
            if config.comms_style == "polling":
                if self._polling is None:
                    await self._start_polling()
                elif (
                    old.trusted_certificates_pem() != config.trusted_certificates_pem()
                    or self._polling_target().address
                    != (old.server.polling_address if old.server else "")
                ):
                    self._polling.reconnect()

    async def _clean_workspaces(self) -> None:
        while True:
            await asyncio.sleep(self._config.cleaner_interval_seconds)
            removed = await self._manager.clean_workspaces(self._config.workspace_retention_seconds)
            if removed:
                log.info("workspaces_cleaned", count=removed)


async def run_agent(home: Path) -> None:
    """Run until SIGTERM or SIGINT, then stop cleanly."""
    agent = TentacleAgent(InstanceHome(home))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await agent.start()
    try:
        await stopping.wait()
    finally:
        with contextlib.suppress(Exception):
            await agent.stop()

"""The `tentacle` command: create, configure, register and run an agent instance."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import click
import grpc

from cuttle.protocol import channel, pki
from cuttle.protocol.errors import kind_from_rpc_error
from cuttle.protocol.logconfig import configure_logging
from cuttle.protocol.v1 import admin_pb2, admin_pb2_grpc
from cuttle.tentacle.config import (
    CONFIG_FILE,
    PORTS_FILE,
    ConfigError,
    InstanceHome,
    ServerLink,
    TentacleConfig,
)
from cuttle.tentacle.execution.script_user import (
    ScriptUserError,
    check_workspaces,
    script_user_for,
    workspaces_root,
)
from cuttle.tentacle.home_lock import HomeLock, HomeLocked

DEFAULT_HOME = "/var/lib/cuttle-tentacle"
# Where earlier versions put the home by default; an instance there keeps being found.
LEGACY_HOME = "/etc/cuttle/tentacle"


def default_home() -> str:
    """CUTTLE_TENTACLE_HOME, else an existing home in the old place, else /var/lib."""
    configured = os.environ.get("CUTTLE_TENTACLE_HOME")
    if configured:
        return configured
    if (
        not (Path(DEFAULT_HOME) / CONFIG_FILE).exists()
        and (Path(LEGACY_HOME) / CONFIG_FILE).exists()
    ):
        return LEGACY_HOME
    return DEFAULT_HOME


# Typed out: cli_package_cache imports it back, and mypy cannot infer through the cycle.
home_option: Callable[[Callable[..., None]], Callable[..., None]] = click.option(
    "--home",
    type=click.Path(path_type=Path, file_okay=False),
    default=default_home,
    show_default=f"{DEFAULT_HOME}, or {LEGACY_HOME} if an instance is there",
    help="The instance's home folder (env CUTTLE_TENTACLE_HOME).",
)


class CliError(click.ClickException):
    """A user-facing failure: printed without a traceback, exit status 1."""


def _home(path: Path) -> InstanceHome:
    return InstanceHome(path)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cuttle-tentacle", prog_name="tentacle")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """The Cuttle Tentacle agent: runs scripts for a Cuttle server.

    \b
    Listening (the server dials in):
      tentacle create-instance --home /opt/tentacle
      tentacle configure --home /opt/tentacle --port 10933 --trust <T> --server https://cuttle:8443
      tentacle register-with --home /opt/tentacle --server https://cuttle:8443 \\
          --server-thumbprint <T> --api-key <K> --name web-01 --environment Dev --role web
      tentacle run --home /opt/tentacle
    Polling (the Tentacle dials out): add --comms-style polling to register-with.
    """
    ctx.obj = {"debug": debug}


run_scripts_as_option = click.option(
    "--run-scripts-as",
    metavar="USER[:GROUP]",
    help='Run scripts as this user (and group) instead of as the Tentacle itself; "" clears. '
    "Needs a Tentacle running as root; takes effect at its next start.",
)


@main.command("create-instance")
@home_option
@run_scripts_as_option
def create_instance(home: Path, run_scripts_as: str | None) -> None:
    """Create an instance home with a new certificate (kept if it already exists)."""
    instance = _home(home)
    if run_scripts_as is not None:
        _check_script_user(run_scripts_as, home, "", starting=False)
    identity = instance.create()
    if run_scripts_as is not None:
        config = _load(instance)
        config.run_scripts_as = run_scripts_as
        instance.save(config)
    click.echo(f"Instance created in {home}")
    click.echo(f"Thumbprint: {identity.thumbprint}")


def _check_script_user(value: str, home: Path, workspaces_dir: str, *, starting: bool) -> None:
    """Refuse a run_scripts_as that names nobody or that this Tentacle could not apply.

    Whether the user can reach the workspaces is only a warning until the Tentacle starts:
    the directories on the way may be fixed in between.
    """
    try:
        user = script_user_for(value)
    except ScriptUserError as exc:
        raise CliError(str(exc)) from exc
    if user is None:
        return
    try:
        check_workspaces(workspaces_root(home, workspaces_dir), user)
    except ScriptUserError as exc:
        if starting:
            raise CliError(str(exc)) from exc
        click.echo(f"warning: {exc}; the Tentacle will not start so", err=True)


@main.command("new-certificate")
@home_option
def new_certificate(home: Path) -> None:
    """Replace the instance's certificate; re-register it with the server afterwards."""
    instance = _home(home)
    if not instance.exists():
        raise CliError(f"{home} has no instance: run `tentacle create-instance` first")
    # A running agent keeps serving with the key it loaded: replacing the files under it would
    # leave it and its home disagreeing about who it is until an unplanned restart.
    try:
        with HomeLock(home, "replace the certificate"):
            identity = instance.new_certificate()
    except HomeLocked as exc:
        raise CliError(str(exc)) from exc
    click.echo(f"New thumbprint: {identity.thumbprint}")


@main.command("show-thumbprint")
@home_option
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
def show_thumbprint(home: Path, output: str) -> None:
    """Print this Tentacle's certificate thumbprint."""
    try:
        thumbprint = _home(home).identity().thumbprint
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    click.echo(json.dumps({"thumbprint": thumbprint}) if output == "json" else thumbprint)


@main.command()
@home_option
@click.option("--port", type=click.IntRange(0, 65535), help="Listening port (0: any free port).")
@click.option("--listen-host", help="Address to listen on (default 0.0.0.0).")
@click.option(
    "--trust",
    "trust",
    multiple=True,
    help="Trust a server by thumbprint: its certificate is fetched from --server (or the server "
    "this Tentacle registered with) and must hash to the thumbprint.",
)
@click.option(
    "--server",
    "server",
    help="Admin address to fetch the certificate for --trust from, e.g. https://host:8443 "
    "(default: the address this Tentacle registered with).",
)
@click.option(
    "--trust-certificate",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    multiple=True,
    help="Trust a server by its certificate file (PEM).",
)
@click.option("--remove-trust", multiple=True, help="Stop trusting a server thumbprint.")
@click.option("--polling-connections", type=click.IntRange(1, 64), help="Polling streams to open.")
@click.option(
    "--heartbeat-interval", type=click.FloatRange(min=0.05), help="Polling heartbeat seconds."
)
@click.option(
    "--heartbeat-timeout", type=click.FloatRange(min=0.1), help="Polling silence limit seconds."
)
@click.option(
    "--reconnect-max-delay", type=click.FloatRange(min=0.05), help="Reconnect backoff cap."
)
@run_scripts_as_option
@click.option(
    "--workspaces-dir",
    help="Where workspaces of scripts run as another user live (absolute; default: "
    '/var/lib/cuttle-tentacle-workspaces/<home name>-<hash>; "" restores it).',
)
def configure(
    home: Path,
    port: int | None,
    listen_host: str | None,
    trust: tuple[str, ...],
    server: str | None,
    trust_certificate: tuple[Path, ...],
    remove_trust: tuple[str, ...],
    polling_connections: int | None,
    heartbeat_interval: float | None,
    heartbeat_timeout: float | None,
    reconnect_max_delay: float | None,
    run_scripts_as: str | None,
    workspaces_dir: str | None,
) -> None:
    """Change the instance's settings; a running Tentacle applies trust changes at once."""
    instance = _home(home)
    config = _load(instance)
    if workspaces_dir and not Path(workspaces_dir).is_absolute():
        raise CliError(f"--workspaces-dir {workspaces_dir!r} must be an absolute path")
    if run_scripts_as is not None or workspaces_dir is not None:
        _check_script_user(
            config.run_scripts_as if run_scripts_as is None else run_scripts_as,
            home,
            config.workspaces_dir if workspaces_dir is None else workspaces_dir,
            starting=False,
        )
    try:
        for thumbprint in trust:
            address = _trust_source(config, server, thumbprint)
            config.trust(thumbprint, _pinned_server_certificate(address, thumbprint).decode())
        for path in trust_certificate:
            pem = path.read_bytes()
            config.trust(pki.check_peer_certificate(pem), pem.decode())
        for thumbprint in remove_trust:
            if not config.remove_trust(thumbprint):
                click.echo(f"note: {thumbprint} was not trusted", err=True)
    except pki.CertificateError as exc:
        raise CliError(str(exc)) from exc
    if port is not None:
        config.port = port
    if listen_host is not None:
        config.listen_host = listen_host
    if polling_connections is not None:
        config.polling_connections = polling_connections
    if heartbeat_interval is not None:
        config.heartbeat_interval_seconds = heartbeat_interval
    if heartbeat_timeout is not None:
        config.heartbeat_timeout_seconds = heartbeat_timeout
    if reconnect_max_delay is not None:
        config.reconnect_max_delay_seconds = reconnect_max_delay
    if run_scripts_as is not None:
        config.run_scripts_as = run_scripts_as
    if workspaces_dir is not None:
        config.workspaces_dir = workspaces_dir
    instance.save(config)
    click.echo("Configuration saved")
    if run_scripts_as is not None or workspaces_dir is not None:
        click.echo("Who scripts run as changes when the Tentacle next starts", err=True)
    for entry in config.trusted_servers:
        if not entry.certificate_pem:
            # Written by older versions: the TLS root bundle cannot enforce a bare thumbprint.
            click.echo(
                f"warning: {entry.thumbprint} is trusted by thumbprint only and will be refused; "
                f"run `tentacle configure --trust {entry.thumbprint} --server URL`",
                err=True,
            )


@main.command("update-trust")
@home_option
@click.option("--old", "old", required=True, help="Thumbprint to stop trusting.")
@click.option("--new", "new", required=True, help="Thumbprint to trust instead.")
@click.option(
    "--server",
    "server",
    help="Admin address to fetch the new certificate from (default: the registered server).",
)
def update_trust(home: Path, old: str, new: str, server: str | None) -> None:
    """Replace a trusted server thumbprint (after the server's certificate was rotated)."""
    instance = _home(home)
    config = _load(instance)
    try:
        new_thumbprint = pki.normalize_thumbprint(new)
        old_thumbprint = pki.normalize_thumbprint(old)
    except pki.CertificateError as exc:
        raise CliError(str(exc)) from exc
    if old_thumbprint not in config.trusted_thumbprints():
        raise CliError(f"{old} is not a trusted thumbprint")
    pem = _pinned_server_certificate(_trust_source(config, server, new), new_thumbprint)
    config.remove_trust(old_thumbprint)
    config.trust(new_thumbprint, pem.decode())
    instance.save(config)
    click.echo(f"Now trusting {new_thumbprint} instead of {old_thumbprint}")


def _trust_source(config: TentacleConfig, server: str | None, thumbprint: str) -> str:
    """Where to fetch the certificate of a server trusted by thumbprint."""
    # The TLS root bundle is made of certificates: a bare thumbprint could never be enforced,
    # so a trust without a reachable server to fetch the certificate from is refused.
    if server:
        return server
    if config.server is not None:
        return config.server.admin_address
    raise CliError(
        f"cannot trust {thumbprint} by thumbprint alone: give --server URL to fetch its "
        "certificate from, or --trust-certificate FILE"
    )


def _split_address(address: str) -> tuple[str, int]:
    parsed = urlparse(address if "://" in address else f"https://{address}")
    if not parsed.hostname:
        raise CliError(f"cannot read a host from {address!r}")
    return parsed.hostname, parsed.port or 8443


def _admin_stub(
    address: str, server_pem: bytes
) -> tuple[grpc.aio.Channel, admin_pb2_grpc.AdminServiceAsyncStub]:
    host, port = _split_address(address)
    credentials = grpc.ssl_channel_credentials(root_certificates=server_pem)
    chan = grpc.aio.secure_channel(
        f"{host}:{port}", credentials, options=channel.client_options(pki.SERVER_NAME)
    )
    return chan, admin_pb2_grpc.AdminServiceStub(chan)


def _pinned_server_certificate(address: str, thumbprint: str) -> bytes:
    host, port = _split_address(address)
    try:
        expected = pki.normalize_thumbprint(thumbprint)
        pem = pki.fetch_peer_certificate(host, port)
        actual = pki.check_peer_certificate(pem)
    except OSError as exc:
        raise CliError(
            f"cannot reach the server at {host}:{port} to fetch its certificate ({exc}); "
            "nothing was trusted"
        ) from exc
    except pki.CertificateError as exc:
        raise CliError(str(exc)) from exc
    if actual != expected:
        raise CliError(
            f"the server at {host}:{port} presented certificate {actual}, not the expected "
            f"{expected}: refusing to trust it"
        )
    return pem


@main.command("register-with")
@home_option
@click.option(
    "--server",
    "server",
    envvar="CUTTLE_SERVER",
    required=True,
    help="Admin address, e.g. https://host:8443 (env CUTTLE_SERVER).",
)
@click.option(
    "--server-thumbprint",
    envvar="CUTTLE_SERVER_THUMBPRINT",
    required=True,
    help="The server's certificate thumbprint (env CUTTLE_SERVER_THUMBPRINT).",
)
@click.option("--api-key", envvar="CUTTLE_API_KEY", required=True, help="Env CUTTLE_API_KEY.")
@click.option("--name", required=True, help="Machine name on the server.")
@click.option("--environment", "environments", multiple=True, required=True)
@click.option("--role", "roles", multiple=True)
@click.option("--comms-style", type=click.Choice(["listening", "polling"]), default="listening")
@click.option("--polling-address", help="host:port of the server's polling endpoint.")
@click.option(
    "--public-hostname", help="Name the server dials for a listening Tentacle (default: FQDN)."
)
@click.option("--force", is_flag=True, help="Replace an existing machine of the same name.")
def register_with(
    home: Path,
    server: str,
    server_thumbprint: str,
    api_key: str,
    name: str,
    environments: tuple[str, ...],
    roles: tuple[str, ...],
    comms_style: str,
    polling_address: str | None,
    public_hostname: str | None,
    force: bool,
) -> None:
    """Register this Tentacle with a server and trust that server."""
    instance = _home(home)
    config = _load(instance)
    identity = _identity(instance)
    server_pem = _pinned_server_certificate(server, server_thumbprint)
    endpoint = ""
    if comms_style == "listening":
        port = config.port
        ports_file = home / PORTS_FILE
        if port == 0 and ports_file.exists():
            port = int(json.loads(ports_file.read_text()).get("listening", 0))
        if port == 0:
            raise CliError("the listening port is 0 (any free port): start `tentacle run` first")
        endpoint = f"{public_hostname or socket.getfqdn()}:{port}"
    request = admin_pb2.RegisterMachineRequest(
        name=name,
        environments=list(environments),
        roles=list(roles),
        comms_style=admin_pb2.COMMS_STYLE_POLLING
        if comms_style == "polling"
        else admin_pb2.COMMS_STYLE_LISTENING,
        endpoint=endpoint,
        certificate_pem=identity.certificate_pem.decode(),
        force=force,
    )

    async def call() -> tuple[admin_pb2.Machine, admin_pb2.ServerInfo]:
        chan, stub = _admin_stub(server, server_pem)
        async with chan:
            metadata = (("x-api-key", api_key),)
            machine = await stub.RegisterMachine(request, metadata=metadata, timeout=30)
            info = await stub.GetServerInfo(
                admin_pb2.GetServerInfoRequest(), metadata=metadata, timeout=30
            )
            return machine, info

    try:
        machine, info = asyncio.run(call())
    except grpc.aio.AioRpcError as exc:
        raise CliError(
            f"registration refused ({kind_from_rpc_error(exc)}): {exc.details()}"
        ) from exc
    if comms_style == "polling" and not polling_address:
        polling_address = f"{_split_address(server)[0]}:{info.polling_port}"
    config.trust(server_thumbprint, server_pem.decode())
    config.comms_style = comms_style
    config.server = ServerLink(
        admin_address=server, machine_name=machine.name, polling_address=polling_address or ""
    )
    instance.save(config)
    click.echo(f"Registered {machine.name} ({comms_style}) with {server}")


@main.command("deregister-from")
@home_option
@click.option("--api-key", envvar="CUTTLE_API_KEY", required=True, help="Env CUTTLE_API_KEY.")
def deregister_from(home: Path, api_key: str) -> None:
    """Remove this machine from the server it registered with, and stop trusting it."""
    instance = _home(home)
    config = _load(instance)
    if config.server is None:
        raise CliError("this Tentacle is not registered with a server")
    link = config.server
    pem = config.trusted_certificates_pem()

    async def call() -> None:
        chan, stub = _admin_stub(link.admin_address, pem)
        async with chan:
            await stub.RemoveMachine(
                admin_pb2.RemoveMachineRequest(name=link.machine_name),
                metadata=(("x-api-key", api_key),),
                timeout=30,
            )

    try:
        asyncio.run(call())
    except grpc.aio.AioRpcError as exc:
        raise CliError(f"deregistration failed: {exc.details()}") from exc
    config.server = None
    instance.save(config)
    click.echo(f"Deregistered {link.machine_name} from {link.admin_address}")


@main.command()
@home_option
@click.option("--log-level", default="info", show_default=True)
def run(home: Path, log_level: str) -> None:
    """Run the agent in the foreground until SIGTERM/SIGINT."""
    from cuttle.tentacle.app import run_agent

    configure_logging(log_level)
    instance = _home(home)
    config = _load(instance)
    # Checked before anything starts: a Tentacle that cannot run scripts as configured must
    # not serve (and the message belongs on the terminal, not in a traceback).
    _check_script_user(config.run_scripts_as, home, config.workspaces_dir, starting=True)
    # Held until this process ends: a second agent on the same home is refused at once.
    lock = HomeLock(home, "run a second Tentacle on this home")
    try:
        lock.acquire()
    except HomeLocked as exc:
        raise CliError(str(exc)) from exc
    try:
        asyncio.run(run_agent(home))
    finally:
        lock.release()


@main.group()
def service() -> None:
    """Install the agent as a systemd service."""


@service.command("install")
@home_option
@click.option(
    "--unit-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("/etc/systemd/system"),
    show_default=True,
)
@click.option("--unit-name", default="cuttle-tentacle", show_default=True)
@click.option(
    "--user",
    "user",
    default="",
    help="Run the service as this user instead of root (a rootless Tentacle: its scripts run "
    "as that user too, and the home must belong to it).",
)
def service_install(home: Path, unit_dir: Path, unit_name: str, user: str) -> None:
    """Write a systemd unit running this instance; enable it with systemctl."""
    if user:
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise CliError(f"--user {user!r}: there is no such user on this machine") from None
    # The program running now, as an absolute path (systemd needs one): not whichever
    # `tentacle` comes first on PATH, which may be another installation.
    running = Path(sys.argv[0])
    executable = str(running.absolute()) if running.is_file() else shutil.which("tentacle")
    if executable is None:
        raise CliError("cannot tell where the tentacle program is installed")
    unit = unit_dir / f"{unit_name}.service"
    unit_dir.mkdir(parents=True, exist_ok=True)
    unit.write_text(service_unit(Path(executable), home.resolve(), user))
    click.echo(f"Wrote {unit}; enable it with: systemctl enable --now {unit_name}")


def service_unit(executable: Path, home: Path, user: str = "") -> str:
    """The systemd unit running this instance (as root unless ``user``), hardened where
    scripts do not suffer."""
    # Root, so that scripts written for Octopus (systemctl, apt, useradd) run unchanged. That
    # rules out the sandboxing options that would break them: ProtectSystem/ProtectHome
    # (package installs, deploys into /srv or /home), PrivateTmp (files shared with other
    # services), NoNewPrivileges and RestrictSUIDSGID (sudo, packages shipping setuid files),
    # ProtectKernelTunables/Modules, PrivateDevices, RestrictNamespaces (sysctl, modprobe,
    # disks, containers), MemoryDenyWriteExecute (JITs), ProtectControlGroups (the Tentacle
    # makes a cgroup per script), ProtectClock (it closes device access to all but the clock),
    # ProtectKernelLogs (dmesg in health checks). What is left costs a deployment script
    # nothing; `systemd-analyze security` rates the result as exposed, which is the price of
    # running scripts as root. A rootless Tentacle adds what an unprivileged script cannot
    # miss (it could not install packages or write /usr anyway).
    rootless = (
        (
            f"User={user}\n"
            "NoNewPrivileges=yes\n"
            "RestrictSUIDSGID=yes\n"
            "ProtectSystem=full\n"
            # A home under /etc (where older installers put it) stays writable.
            f"ReadWritePaths={home}\n"
            "ProtectKernelTunables=yes\n"
            "ProtectKernelModules=yes\n"
            "ProtectKernelLogs=yes\n"
            "ProtectClock=yes\n"
        )
        if user
        else ""
    )
    return (
        "[Unit]\n"
        "Description=Cuttle Tentacle agent\n"
        "After=network-online.target\nWants=network-online.target\n\n"
        "[Service]\n"
        f"ExecStart={executable} run --home {home}\n"
        f"{rootless}"
        "Restart=always\nRestartSec=5\n"
        # Scripts may start services of their own: kill only the agent on stop, not the tree.
        "KillMode=process\n"
        # Each script gets a child cgroup of the service's (the kill that reaches every
        # process): systemd must leave that subtree to the Tentacle (for a rootless one, it
        # also hands the subtree to the service's user).
        "Delegate=yes\n"
        "Environment=CUTTLE_LOG_FORMAT=json\n"
        "LockPersonality=yes\n"
        "RestrictRealtime=yes\n"
        # 32-bit foreign binaries (rare on a deployment target) are the one thing this blocks.
        "SystemCallArchitectures=native\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )


def _load(instance: InstanceHome) -> TentacleConfig:
    try:
        return instance.load()
    except ConfigError as exc:
        raise CliError(str(exc)) from exc


def _identity(instance: InstanceHome) -> pki.Identity:
    try:
        return instance.identity()
    except ConfigError as exc:
        raise CliError(str(exc)) from exc


# Registered last: the package-cache commands use this module's options and errors.
from cuttle.tentacle.cli_package_cache import package_cache  # noqa: E402

main.add_command(package_cache)

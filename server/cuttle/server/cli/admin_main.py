"""`cuttle`: the admin client (machines, scripts, tasks)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from cuttle.protocol.v1 import admin_pb2 as apb
from cuttle.protocol.v1 import tentacle_pb2 as tpb
from cuttle.server.cli.completion_commands import completion
from cuttle.server.cli.confirm import confirm, yes_option
from cuttle.server.cli.connection import AdminConnection, check_request_size
from cuttle.server.cli.context import console, format_ms, run_call, script_variables
from cuttle.server.cli.json_output import (
    listing_output,
    message_json,
    print_data,
    text_output,
)
from cuttle.server.cli.login_commands import login, logout
from cuttle.server.cli.name_checks import check_environments, refuse_space
from cuttle.server.cli.node_commands import node
from cuttle.server.cli.package_commands import package
from cuttle.server.cli.profiles import DEFAULT_PROFILE, DEFAULT_SERVER, ConnectionChoice, check_name
from cuttle.server.cli.suggest import did_you_mean, machine_names
from cuttle.server.cli.task_commands import check_raw, exit_status, raw_option, show_event, task

SYNTAX = {"bash": 1, "python": 2, "sh": 3, "pwsh": 4}
HEALTH = {0: "unknown", 1: "healthy", 2: "unavailable", 3: "unreachable"}
STYLE = {1: "listening", 2: "polling"}


class _CuttleGroup(click.Group):
    """The `cuttle` group, whose model commands are loaded only when one is called or listed.

    Those commands import the model's documents (pydantic) and their helpers: a third of the
    CLI's start-up, which `cuttle task log` or `cuttle script run` would pay for nothing.
    """

    _model_loaded = False

    def _load_model(self) -> None:
        if not self._model_loaded:
            self._model_loaded = True
            from cuttle.server.cli.model_commands import register  # noqa: PLC0415 - see above

            register(self)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command of that name, loading the model's commands if it is not a core one."""
        command = super().get_command(ctx, cmd_name)
        if command is None:
            self._load_model()
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, the model's included."""
        self._load_model()
        return super().list_commands(ctx)


@click.group(cls=_CuttleGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cuttle-server", prog_name="cuttle")
@click.option(
    "--server",
    envvar="CUTTLE_SERVER",
    help=f"Admin API address (env CUTTLE_SERVER; else the profile's; else {DEFAULT_SERVER}).",
)
@click.option("--api-key", envvar="CUTTLE_API_KEY", help="API key (env CUTTLE_API_KEY).")
@click.option(
    "--server-thumbprint",
    envvar="CUTTLE_SERVER_THUMBPRINT",
    help="Pinned server thumbprint (env CUTTLE_SERVER_THUMBPRINT).",
)
@click.option(
    "--profile",
    envvar="CUTTLE_PROFILE",
    help="Saved login to use (env CUTTLE_PROFILE; default: 'default'); see `cuttle login`.",
)
@click.option(
    "--space",
    envvar="CUTTLE_SPACE",
    default="",
    help="Space of the model commands (env CUTTLE_SPACE; default: the default space).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def main(
    ctx: click.Context,
    server: str | None,
    api_key: str | None,
    server_thumbprint: str | None,
    profile: str | None,
    space: str,
    debug: bool,
) -> None:
    """Drive a Cuttle server.

    \b
      cuttle login --server https://cuttle:8443 --server-thumbprint T   # once; asks for the key
      cuttle machine list
      cuttle script run --environment Dev --role web --syntax bash -- 'echo hello from $(hostname)'
      cuttle task log <task-id>

    The connection comes from the flags, then the CUTTLE_* environment variables, then the
    profile saved by `cuttle login`.
    """
    ctx.obj = {
        "connection": ConnectionChoice(
            profile=check_name(profile) if profile else DEFAULT_PROFILE,
            profile_chosen=bool(profile),
            server=server or None,
            server_thumbprint=server_thumbprint or None,
            api_key=api_key or None,
        ),
        "space": space,
        "debug": debug,
    }


@main.group()
@click.pass_context
def machine(ctx: click.Context) -> None:
    """Deployment targets (registered Tentacles); server-wide, not per space."""
    refuse_space(ctx, "machines")


def _health_text(m: apb.Machine) -> str:
    text = HEALTH.get(m.health, "?")
    if m.unreachable_since_unix_ms:
        # How long it has failed says how close an unreachable machine is to being skipped.
        text += f" since {format_ms(m.unreachable_since_unix_ms)}"
    return text + ("" if m.enabled else " (disabled)")


def _machines_table(machines: list[apb.Machine]) -> Table:
    table = Table("Name", "Environments", "Roles", "Style", "Health", "Version", "Message")
    for m in machines:
        table.add_row(
            m.name,
            ", ".join(m.environments),
            ", ".join(m.roles),
            STYLE.get(m.comms_style, "?"),
            _health_text(m),
            m.tentacle_version or "-",
            m.health_message,
        )
    return table


@machine.command("list")
@click.option("--environment", "environments", multiple=True)
@click.option("--role", "roles", multiple=True)
@listing_output
@click.pass_context
def machine_list(
    ctx: click.Context, environments: tuple[str, ...], roles: tuple[str, ...], output: str
) -> None:
    """List machines: name, environments, roles, style, health, version.

    Health is unknown (not checked yet), healthy, unreachable (checks fail, since when; work
    still tries it) or unavailable (failing for the machine policy's unavailable_after_seconds;
    work skips it). An --environment that does not exist is refused.

    \b
    Examples:
      cuttle machine list
      cuttle machine list --environment Production --role web-server --output json
    """
    check_environments(ctx, environments, "--environment", "")

    async def work(conn: AdminConnection) -> list[apb.Machine]:
        machines: list[apb.Machine] = []
        token = ""
        while True:
            page = await conn.stub.ListMachines(
                apb.ListMachinesRequest(
                    environments=environments, roles=roles, page_token=token, page_size=500
                ),
                metadata=conn.metadata,
                timeout=60,
            )
            machines.extend(page.machines)
            token = page.next_page_token
            if not token:
                return machines

    machines = run_call(ctx, work)
    if output != "table":
        print_data([message_json(m) for m in machines], output)
    else:
        console.print(_machines_table(machines))


@machine.command("health-check")
@click.option("--name", "names", multiple=True, help="Only these machines (default: all).")
@listing_output
@click.pass_context
def machine_health_check(ctx: click.Context, names: tuple[str, ...], output: str) -> None:
    """Check machines now; exits 1 when any is not healthy."""

    async def work(conn: AdminConnection) -> apb.CheckHealthResponse:
        return await conn.stub.CheckHealth(
            apb.CheckHealthRequest(names=names), metadata=conn.metadata, timeout=120
        )

    result = run_call(ctx, work)
    if output != "table":
        print_data([message_json(m) for m in result.machines], output)
    else:
        console.print(_machines_table(list(result.machines)))
    if any(m.health != apb.HEALTH_STATUS_HEALTHY for m in result.machines):
        sys.exit(1)


@machine.command("remove")
@click.argument("name")
@yes_option
@click.pass_context
def machine_remove(ctx: click.Context, name: str, yes: bool) -> None:
    """Remove a machine; its certificate is refused from now on.

    Asks first on a terminal; without one, --yes is needed.

    \b
    Example:
      cuttle machine remove web-03 --yes
    """
    known = run_call(ctx, machine_names)
    if name.casefold() not in {n.casefold() for n in known}:
        raise click.ClickException(
            f"machine {name!r} was not found{did_you_mean(name, known)} [not_found]"
        )
    confirm(
        f"remove machine {name}",
        ["stop trusting its certificate (it must register again to get work)"],
        yes=yes,
    )

    async def work(conn: AdminConnection) -> None:
        await conn.stub.RemoveMachine(
            apb.RemoveMachineRequest(name=name), metadata=conn.metadata, timeout=60
        )

    run_call(ctx, work)
    click.echo(f"Removed {name}")


@machine.command("update")
@click.argument("name")
@click.option("--environment", "environments", multiple=True, help="Replace the environments.")
@click.option("--role", "roles", multiple=True, help="Replace the target tags.")
@click.option("--clear-roles", is_flag=True, help="Remove every target tag.")
@click.option("--tenant", "tenants", multiple=True, help="Replace the tenants.")
@click.option("--tenant-tag", "tenant_tags", multiple=True, help="Replace the tenant tags.")
@click.option(
    "--tenanted-mode", type=click.Choice(["untenanted", "tenanted", "tenanted_or_untenanted"])
)
@click.option(
    "--enable/--disable", "enabled", default=None, help="A disabled machine gets no work."
)
@click.option("--policy", default=None, help="Machine policy ('' for the default one).")
@listing_output
@click.pass_context
def machine_update(
    ctx: click.Context,
    name: str,
    environments: tuple[str, ...],
    roles: tuple[str, ...],
    clear_roles: bool,
    tenants: tuple[str, ...],
    tenant_tags: tuple[str, ...],
    tenanted_mode: str | None,
    enabled: bool | None,
    policy: str | None,
    output: str,
) -> None:
    """Change a machine; options not given keep their value.

    \b
      cuttle machine update web-01 --environment Test --role web-server --role api
      cuttle machine update web-01 --disable
      cuttle machine update web-01 --tenant Contoso --tenanted-mode tenanted
    """
    if roles and clear_roles:
        raise click.UsageError("give --role or --clear-roles, not both")
    request = apb.UpdateMachineRequest(name=name)
    if environments:
        request.environments.values.extend(environments)
    if roles or clear_roles:
        request.roles.SetInParent()
        request.roles.values.extend(roles)
    if tenants:
        request.tenants.values.extend(tenants)
    if tenant_tags:
        request.tenant_tags.values.extend(tenant_tags)
    if tenanted_mode is not None:
        request.tenanted_mode = tenanted_mode
    if enabled is not None:
        request.enabled = enabled
    if policy is not None:
        request.policy = policy

    async def work(conn: AdminConnection) -> apb.Machine:
        updated: apb.Machine = await conn.stub.UpdateMachine(
            request, metadata=conn.metadata, timeout=60
        )
        return updated

    updated = run_call(ctx, work)
    if output != "table":
        print_data(message_json(updated), output)
    else:
        console.print(_machines_table([updated]))


@main.group()
@click.pass_context
def script(ctx: click.Context) -> None:
    """Run ad-hoc scripts on machines (server-wide, not per space)."""
    refuse_space(ctx, "machines (and so ad-hoc scripts)")


@script.command("run")
@click.option("--environment", "environments", multiple=True, help="Machines in this environment.")
@click.option("--role", "roles", multiple=True, help="Machines with this role (target tag).")
@click.option("--machine", "machines", multiple=True, help="This machine by name.")
@click.option("--syntax", type=click.Choice(list(SYNTAX)), default="bash", show_default=True)
@click.option(
    "--file",
    "file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Read the script from a file.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=0,
    help="Seconds before the script is killed (0: none).",
)
@click.option(
    "--isolation",
    type=click.Choice(["none", "full"]),
    default="none",
    show_default=True,
    help="full: on each machine, one fully isolated script holding the mutex at a time; "
    "the others wait.",
)
@click.option("--mutex", default="", help="The mutex's name (with --isolation full).")
@click.option(
    "--isolation-timeout",
    type=click.FloatRange(min=0),
    default=0,
    help="Seconds to wait for the mutex before failing to start (0: no limit).",
)
@click.option(
    "--variable",
    "variables",
    multiple=True,
    help="NAME=VALUE made available to get_octopusvariable.",
)
@click.option(
    "--sensitive-variable",
    "sensitive",
    multiple=True,
    help="NAME=ENV_VAR: a sensitive variable whose value is read from an environment variable "
    "(never from the command line).",
)
@text_output
@raw_option
@click.argument("body", nargs=-1)
@click.pass_context
def script_run(
    ctx: click.Context,
    environments: tuple[str, ...],
    roles: tuple[str, ...],
    machines: tuple[str, ...],
    syntax: str,
    file: Path | None,
    timeout: float,
    isolation: str,
    mutex: str,
    isolation_timeout: float,
    variables: tuple[str, ...],
    sensitive: tuple[str, ...],
    output: str,
    raw: bool,
    body: tuple[str, ...],
) -> None:
    """Run a script on every matching machine in parallel and stream each machine's output.

    Exit status: 0 when every machine succeeded, 1 when any failed (they are named).
    """
    check_raw(raw, output)
    if file is not None and body:
        raise click.UsageError("give the script either as --file or as arguments, not both")
    text = file.read_text() if file is not None else " ".join(body)
    if not text.strip():
        raise click.UsageError("no script given: pass it after -- or with --file")
    if isolation != "full" and (mutex or isolation_timeout):
        raise click.UsageError("--mutex and --isolation-timeout need --isolation full")
    check_environments(ctx, environments, "--environment", "")
    request_vars = [
        tpb.Variable(name=name, value=value, sensitive=secret)
        for name, value, secret in script_variables(variables, sensitive)
    ]
    request = apb.RunScriptRequest(
        environments=environments,
        roles=roles,
        machines=machines,
        syntax=SYNTAX[syntax],  # type: ignore[arg-type]
        body=text,
        timeout_seconds=timeout,
        variables=request_vars,
        full_isolation=isolation == "full",
        mutex_name=mutex,
        isolation_timeout_seconds=isolation_timeout,
        accept_blocks=True,
    )
    check_request_size(
        request,
        f"script file {file}" if file is not None else "the script",
        "Keep the script small: ship large content as a package or file it reads.",
    )

    async def work(conn: AdminConnection) -> apb.Task | None:
        final: apb.Task | None = None
        async for event in conn.stub.RunScript(request, metadata=conn.metadata):
            final = show_event(event, output, raw) or final
        return final

    final = run_call(ctx, work)
    sys.exit(exit_status(final))


@main.group()
def artifact() -> None:
    """Files scripts published with new_octopusartifact."""


@artifact.command("download")
@click.argument("task_id")
@click.argument("machine_name")
@click.argument("name")
@click.option("-o", "--out", "out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.pass_context
def artifact_download(
    ctx: click.Context, task_id: str, machine_name: str, name: str, out: Path
) -> None:
    """Save an artifact to a file."""

    async def work(conn: AdminConnection) -> bytes:
        parts = []
        async for chunk in conn.stub.DownloadArtifact(
            apb.DownloadArtifactRequest(task_id=task_id, machine=machine_name, name=name),
            metadata=conn.metadata,
        ):
            parts.append(chunk.data)
        return b"".join(parts)

    out.write_bytes(run_call(ctx, work))
    click.echo(f"Saved {out}")


main.add_command(task)
main.add_command(node)
main.add_command(package)
main.add_command(login)
main.add_command(logout)
main.add_command(completion)

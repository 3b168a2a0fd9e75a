"""`cuttle`: the admin client (machines, scripts, tasks)."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.table import Table

from cuttle.protocol.v1 import admin_pb2 as apb
from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.protocol.v1 import tentacle_pb2 as tpb
from cuttle.server.cli import log_output
from cuttle.server.cli.connection import AdminConnection, check_request_size
from cuttle.server.cli.context import (
    console,
    err_console,
    format_ms,
    output_option,
    run_call,
    to_json,
)
from cuttle.server.cli.deploy_commands import task_tree
from cuttle.server.cli.login_commands import login, logout
from cuttle.server.cli.model_commands import register as register_model_commands
from cuttle.server.cli.profiles import DEFAULT_PROFILE, DEFAULT_SERVER, ConnectionChoice, check_name
from cuttle.server.cli.times import format_duration, parse_since

SYNTAX = {"bash": 1, "python": 2, "sh": 3, "pwsh": 4}
HEALTH = {0: "unknown", 1: "healthy", 2: "unavailable", 3: "unreachable"}
STYLE = {1: "listening", 2: "polling"}
TASK_STATE = {
    1: "queued",
    2: "running",
    3: "success",
    4: "failed",
    5: "cancelled",
    6: "waiting",
    7: "cancelling",
    8: "timed_out",
}
TASK_STATE_NAMES = tuple(TASK_STATE.values())
SCRIPT_STATE = {
    1: "pending",
    2: "running",
    3: "complete",
    4: "cancelled",
    5: "timed out",
    6: "result unknown",
    7: "failed to start",
}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
def machine() -> None:
    """Deployment targets (registered Tentacles)."""


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
@output_option
@click.pass_context
def machine_list(
    ctx: click.Context, environments: tuple[str, ...], roles: tuple[str, ...], output: str
) -> None:
    """List machines: name, environments, roles, style, health, version.

    Health is unknown (not checked yet), healthy, unreachable (checks fail, since when; work
    still tries it) or unavailable (failing for the machine policy's unavailable_after_seconds;
    work skips it).
    """

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
    if output == "json":
        click.echo(json.dumps([to_json(m) for m in machines], indent=2))
    else:
        console.print(_machines_table(machines))


@machine.command("health-check")
@click.option("--name", "names", multiple=True, help="Only these machines (default: all).")
@output_option
@click.pass_context
def machine_health_check(ctx: click.Context, names: tuple[str, ...], output: str) -> None:
    """Check machines now; exits 1 when any is not healthy."""

    async def work(conn: AdminConnection) -> apb.CheckHealthResponse:
        return await conn.stub.CheckHealth(
            apb.CheckHealthRequest(names=names), metadata=conn.metadata, timeout=120
        )

    result = run_call(ctx, work)
    if output == "json":
        click.echo(json.dumps([to_json(m) for m in result.machines], indent=2))
    else:
        console.print(_machines_table(list(result.machines)))
    if any(m.health != apb.HEALTH_STATUS_HEALTHY for m in result.machines):
        sys.exit(1)


@machine.command("remove")
@click.argument("name")
@click.pass_context
def machine_remove(ctx: click.Context, name: str) -> None:
    """Remove a machine; its certificate is refused from now on."""

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
@click.option("--output", type=click.Choice(["table", "json"]), default="table")
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
    if output == "json":
        click.echo(json.dumps(to_json(updated)))
    else:
        console.print(_machines_table([updated]))


@main.group()
def script() -> None:
    """Run ad-hoc scripts on machines."""


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
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
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
    body: tuple[str, ...],
) -> None:
    """Run a script on every matching machine in parallel and stream each machine's output.

    Exit status: 0 when every machine succeeded, 1 when any failed (they are named).
    """
    if file is not None and body:
        raise click.UsageError("give the script either as --file or as arguments, not both")
    text = file.read_text() if file is not None else " ".join(body)
    if not text.strip():
        raise click.UsageError("no script given: pass it after -- or with --file")
    if isolation != "full" and (mutex or isolation_timeout):
        raise click.UsageError("--mutex and --isolation-timeout need --isolation full")
    request_vars = []
    for item in variables:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.UsageError(f"--variable {item!r}: expected NAME=VALUE")
        request_vars.append(tpb.Variable(name=name, value=value))
    for item in sensitive:
        name, sep, env_name = item.partition("=")
        if not sep or env_name not in os.environ:
            raise click.UsageError(
                f"--sensitive-variable {item!r}: expected NAME=ENV_VAR with ENV_VAR set"
            )
        request_vars.append(tpb.Variable(name=name, value=os.environ[env_name], sensitive=True))
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
        accept_runs=True,
    )
    check_request_size(
        request,
        f"script file {file}" if file is not None else "the script",
        "Keep the script small: ship large content as a package or file it reads.",
    )

    async def work(conn: AdminConnection) -> apb.Task | None:
        final: apb.Task | None = None
        async for event in conn.stub.RunScript(request, metadata=conn.metadata):
            final = _show_event(event, output) or final
        return final

    final = run_call(ctx, work)
    sys.exit(_exit_status(final))


def _show_event(event: apb.TaskEvent, output: str) -> apb.Task | None:
    kind = event.WhichOneof("kind")
    out = sys.stdout.buffer
    if output == "json":
        if kind == "runs":
            # The same JSON lines as the line-by-line events, so scripts that read them work.
            out.write(log_output.json_lines(event.task_id, event.runs))
        else:
            out.write(json.dumps(to_json(event)).encode() + b"\n")
        out.flush()
    elif kind == "started":
        err_console.print(f"[bold]Task {event.task_id}[/bold]: {event.started.description}")
    elif kind == "runs":
        # One write per message: each run's lines get their machine prefix by one replace.
        out.write(log_output.prefixed(event.runs))
        out.flush()
    elif kind == "lines":
        out.write(
            b"".join(
                line.machine.encode() + b": " + line.line.text + b"\n" for line in event.lines.lines
            )
        )
        out.flush()
    elif kind == "target_finished":
        t = event.target_finished
        state = SCRIPT_STATE.get(t.state, "?")
        detail = f" exit code {t.exit_code}" if t.state == tpb.SCRIPT_STATE_COMPLETE else ""
        message = f" - {t.message}" if t.message else ""
        err_console.print(f"[bold]{t.machine}[/bold]: {state}{detail}{message}", highlight=False)
        for v in t.output_variables:
            err_console.print(f"  output {v.name} = {v.value}", highlight=False)
        for a in t.artifacts:
            err_console.print(f"  artifact {a.name} ({a.size} bytes)", highlight=False)
    if kind == "finished":
        if output != "json":
            err_console.print(f"Task {event.task_id} {TASK_STATE.get(event.finished.state, '?')}")
        return event.finished
    return None


def _exit_status(task: apb.Task | None) -> int:
    if task is None:
        return 1
    failed = [
        t.machine
        for t in task.targets
        if not (t.state == tpb.SCRIPT_STATE_COMPLETE and t.exit_code == 0)
    ]
    if failed:
        err_console.print(f"Failed on: {', '.join(failed)}", highlight=False)
        return 1
    return 0 if task.state == apb.TASK_STATE_SUCCESS else 1


@main.group()
def task() -> None:
    """Server tasks (script runs) and their logs."""


@task.command("list")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(TASK_STATE_NAMES, case_sensitive=False),
    help="Only tasks in this state (repeat for several).",
)
@click.option("--project", default="", help="Only deployments of this project.")
@click.option(
    "--environment", default="", help="Only tasks in this environment (deployments and scripts)."
)
@click.option("--started-by", default="", help="Only tasks this user (or key) started.")
@click.option("--since", default="", help="Only tasks created since: an age (2h, 7d) or a time.")
@click.option(
    "--limit",
    default=50,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="At most this many tasks.",
)
@output_option
@click.pass_context
def task_list(
    ctx: click.Context,
    states: tuple[str, ...],
    project: str,
    environment: str,
    started_by: str,
    since: str,
    limit: int,
    output: str,
) -> None:
    """Recent tasks you may see, newest first, with who started them and how long they took.

    \b
      cuttle task list --state running --state queued
      cuttle task list --project Web --environment Production --since 7d
      cuttle task list --started-by alice --limit 10 --output json
    """
    since_ms = 0
    if since:
        try:
            since_ms = int(parse_since(since, datetime.now(UTC)).timestamp() * 1000)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from None

    async def work(conn: AdminConnection) -> apb.ListTasksResponse:
        return await conn.stub.ListTasks(
            apb.ListTasksRequest(
                page_size=limit,
                states=[s.lower() for s in states],
                project=project,
                environment=environment,
                started_by=started_by,
                since_unix_ms=since_ms,
            ),
            metadata=conn.metadata,
            timeout=60,
        )

    result = run_call(ctx, work)
    if output == "json":
        click.echo(json.dumps([to_json(t) for t in result.tasks], indent=2))
        return
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    table = Table("Id", "State", "Started by", "Created", "Duration", "Description")
    for t in result.tasks:
        table.add_row(
            t.id,
            TASK_STATE.get(t.state, "?"),
            t.started_by or "-",
            format_ms(t.created_unix_ms),
            _duration(t, now_ms),
            t.description,
        )
    # Full ids: a listing is where ids are copied from, so none may be cut short.
    table.columns[0].no_wrap = True
    table.columns[0].overflow = "fold"
    console.print(table)


def _duration(t: apb.Task, now_ms: int) -> str:
    """How long a task ran (so far, while it runs); '-' while it has not started."""
    if not t.started_unix_ms:
        return "-"
    end = t.finished_unix_ms or now_ms
    text = format_duration(max(0, end - t.started_unix_ms))
    return text if t.finished_unix_ms else f"{text} so far"


@task.command("show")
@click.argument("task_id")
@output_option
@click.pass_context
def task_show(ctx: click.Context, task_id: str, output: str) -> None:
    """A task and each machine's result; TASK_ID may be any unique prefix of the id."""

    async def work(conn: AdminConnection) -> apb.Task:
        return await conn.stub.GetTask(
            apb.GetTaskRequest(task_id=task_id), metadata=conn.metadata, timeout=60
        )

    t = run_call(ctx, work)
    if output == "json":
        click.echo(json.dumps(to_json(t), indent=2))
        return
    console.print(f"Task {t.id}: {TASK_STATE.get(t.state, '?')} - {t.description}")
    if t.started_by:
        console.print(f"Started by: {t.started_by}", highlight=False)
    if t.waiting_reason:
        console.print(f"Waiting: {t.waiting_reason}", highlight=False)
    if t.reason:
        console.print(f"Reason: {t.reason}", highlight=False)
    if t.kind == "deployment":
        console.print(task_tree(t))
        return
    table = Table("Machine", "State", "Exit", "Message")
    for row in machine_rows(t):
        table.add_row(*row)
    console.print(table)


def machine_rows(t: apb.Task) -> list[tuple[str, str, str, str]]:
    """Each machine of a script task: its node's state, and an exit code only once it ended."""
    results = {r.machine: r for r in t.targets}
    rows = []
    for node in t.nodes:
        if node.kind != "machine":
            continue
        result = results.get(node.machine)
        ended = node.state not in ("pending", "running")
        # An exit code exists only for a script that ended; -1 is the wire's "none".
        exit_code = str(node.exit_code) if ended and node.exit_code >= 0 else "-"
        message = node.reason or (result.message if result is not None else "")
        rows.append((node.machine, node.state.replace("_", " "), exit_code, message))
    return rows


@task.command("rerun")
@click.argument("task_id")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def task_rerun(ctx: click.Context, task_id: str, output: str) -> None:
    """Deploy again: the same release, environment, skips, machines and prompted values.

    \b
      cuttle task rerun 3f2c...
    """

    async def work(conn: AdminConnection) -> mpb.DeployResponse:
        done: mpb.DeployResponse = await conn.deployments.Rerun(
            mpb.RerunRequest(task_id=task_id), metadata=conn.metadata, timeout=120
        )
        return done

    done = run_call(ctx, work)
    if output == "json":
        click.echo(json.dumps({"task_id": done.task_id, "state": done.state}))
    else:
        err_console.print(f"Rerunning as task {done.task_id} ({done.state})", highlight=False)


@task.command("log")
@click.argument("task_id")
@click.option("--follow/--no-follow", default=False, help="Keep following a running task.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.pass_context
def task_log(ctx: click.Context, task_id: str, follow: bool, output: str) -> None:
    """Print a task's full log (each line prefixed by its machine); any unique id prefix."""

    async def work(conn: AdminConnection) -> apb.Task | None:
        final: apb.Task | None = None
        async for event in conn.stub.WatchTask(
            apb.WatchTaskRequest(task_id=task_id, no_follow=not follow, accept_runs=True),
            metadata=conn.metadata,
        ):
            final = _show_event(event, output) or final
        return final

    run_call(ctx, work)


@task.command("cancel")
@click.argument("task_id")
@click.option("--reason", default="", help="Why (recorded with the task).")
@click.pass_context
def task_cancel(ctx: click.Context, task_id: str, reason: str) -> None:
    """Cancel a task; its scripts are killed on every machine; any unique id prefix."""

    async def work(conn: AdminConnection) -> apb.Task:
        return await conn.stub.CancelTask(
            apb.CancelTaskRequest(task_id=task_id, reason=reason),
            metadata=conn.metadata,
            timeout=60,
        )

    t = run_call(ctx, work)
    click.echo(f"Task {t.id}: {TASK_STATE.get(t.state, '?')}")


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


register_model_commands(main)
main.add_command(login)
main.add_command(logout)

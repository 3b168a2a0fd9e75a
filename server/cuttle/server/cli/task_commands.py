"""`cuttle task`: listing, showing, following, cancelling and rerunning server tasks.

Task ids may be given in full or as any unique prefix (the server resolves them); listings show
ids in full, since that is where they are copied from.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click
from rich.table import Table

from cuttle.protocol.v1 import admin_pb2 as apb
from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.protocol.v1 import tentacle_pb2 as tpb
from cuttle.server.cli import log_output
from cuttle.server.cli.connection import AdminConnection
from cuttle.server.cli.context import console, err_console, format_ms, run_call
from cuttle.server.cli.deploy_commands import task_tree
from cuttle.server.cli.json_output import (
    event_json,
    listing_output,
    print_data,
    print_json_line,
    task_json,
    text_output,
)
from cuttle.server.cli.name_checks import check_anywhere
from cuttle.server.cli.times import format_duration, parse_since

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


raw_option = click.option(
    "--raw",
    is_flag=True,
    help="Print script output as the bytes written (text output; by default invalid UTF-8 "
    "shows as U+FFFD).",
)


def check_raw(raw: bool, output: str) -> None:
    """--raw gives bytes, which only text output can carry."""
    if raw and output != "text":
        raise click.UsageError("--raw prints the bytes as written: use it with --output text")


def show_event(event: apb.TaskEvent, output: str, raw: bool = False) -> apb.Task | None:
    """Print one task event: text for people, or one JSON line; returns the final task."""
    kind = event.WhichOneof("kind")
    out = sys.stdout.buffer
    if output == "json":
        if kind == "blocks":
            # The same JSON lines as the line-by-line events, so scripts that read them work.
            out.write(log_output.json_lines(event.task_id, log_output.block_runs(event.blocks)))
        elif kind == "runs":
            out.write(log_output.json_lines(event.task_id, event.runs))
            out.flush()
        else:
            print_json_line(event_json(event))
    elif kind == "started":
        err_console.print(f"[bold]Task {event.task_id}[/bold]: {event.started.description}")
    elif kind == "blocks":
        # One write per message, one replace per block: nothing per run or line.
        out.writelines(log_output.prefixed_blocks(event.blocks, raw))
        out.flush()
    elif kind == "runs":
        # One write per message: each run's lines get their machine prefix by one replace.
        out.write(log_output.prefixed(event.runs, raw))
        out.flush()
    elif kind == "lines":
        text = b"".join(
            line.machine.encode() + b": " + line.line.text + b"\n" for line in event.lines.lines
        )
        out.write(text if raw else log_output.valid_utf8(text))
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


def exit_status(task: apb.Task | None) -> int:
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


@click.group()
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
@listing_output
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
    # A typo must not list nothing as if no task matched.
    check_anywhere(ctx, "project", project, "--project")
    check_anywhere(ctx, "environment", environment, "--environment")

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
    if output != "table":
        print_data([task_json(t) for t in result.tasks], output)
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
@listing_output
@click.pass_context
def task_show(ctx: click.Context, task_id: str, output: str) -> None:
    """A task and each machine's result; TASK_ID may be any unique prefix of the id.

    \b
    Example:
      cuttle task show 3f2a
    """

    async def work(conn: AdminConnection) -> apb.Task:
        return await conn.stub.GetTask(
            apb.GetTaskRequest(task_id=task_id), metadata=conn.metadata, timeout=60
        )

    t = run_call(ctx, work)
    if output != "table":
        print_data(task_json(t), output)
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
@text_output
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
        print_json_line({"task_id": done.task_id, "state": done.state})
    else:
        err_console.print(f"Rerunning as task {done.task_id} ({done.state})", highlight=False)


@task.command("log")
@click.argument("task_id")
@click.option("--follow/--no-follow", default=False, help="Keep following a running task.")
@text_output
@raw_option
@click.pass_context
def task_log(ctx: click.Context, task_id: str, follow: bool, output: str, raw: bool) -> None:
    """Print a task's full log (each line prefixed by its machine); any unique id prefix.

    \b
      cuttle task log 3f2c... --follow
      cuttle task log 3f2c... --output json     # one JSON document per line
      cuttle task log 3f2c... --raw > out.bin   # the bytes as the scripts wrote them
    """
    check_raw(raw, output)

    async def work(conn: AdminConnection) -> apb.Task | None:
        final: apb.Task | None = None
        async for event in conn.stub.WatchTask(
            apb.WatchTaskRequest(task_id=task_id, no_follow=not follow, accept_blocks=True),
            metadata=conn.metadata,
        ):
            final = show_event(event, output, raw) or final
        return final

    run_call(ctx, work)


@task.command("cancel")
@click.argument("task_id")
@click.option("--reason", default="", help="Why (recorded with the task).")
@text_output
@click.pass_context
def task_cancel(ctx: click.Context, task_id: str, reason: str, output: str) -> None:
    """Cancel a task; its scripts are killed on every machine; any unique id prefix.

    It answers at once: the task reads `cancelling` until every machine confirmed, then
    `cancelled` (`cuttle task show ID` or `task log --follow` to watch).

    \b
    Example:
      cuttle task cancel 3f2a --reason "wrong release" --output json
    """

    async def work(conn: AdminConnection) -> apb.Task:
        return await conn.stub.CancelTask(
            apb.CancelTaskRequest(task_id=task_id, reason=reason),
            metadata=conn.metadata,
            timeout=60,
        )

    t = run_call(ctx, work)
    if output == "json":
        print_json_line(task_json(t))
        return
    click.echo(f"Task {t.id}: {TASK_STATE.get(t.state, '?')}")

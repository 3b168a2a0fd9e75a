"""`cuttle deploy`: take a release into an environment, optionally waiting with live progress.

Exit codes, which scripts rely on: 0 the deployment succeeded (or a dry run planned), 1 it
ended otherwise (or was refused), 3 `--wait-timeout` ran out first.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterable

import click
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from cuttle.protocol.v1 import admin_pb2 as apb
from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.server.cli.connection import AdminConnection
from cuttle.server.cli.context import (
    console,
    err_console,
    run_call,
    script_variables,
    space_option,
)
from cuttle.server.cli.json_output import (
    event_json,
    listing_output,
    print_data,
    print_json_line,
    text_output,
    time_or_none,
)
from cuttle.server.cli.log_output import block_runs, json_lines, prefixed_blocks, valid_utf8

WAIT_TIMED_OUT = 3


_FINISHED = {
    apb.TASK_STATE_SUCCESS: "success",
    apb.TASK_STATE_FAILED: "failed",
    apb.TASK_STATE_CANCELLED: "cancelled",
    apb.TASK_STATE_TIMED_OUT: "timed_out",
}


@click.command("deploy")
@click.option("--project", required=True, help="The project.")
@click.option("--release", required=True, help="The release version to deploy.")
@click.option("--environment", required=True, help="The environment to deploy to.")
@click.option("--tenant", default="", help="Deploy for this tenant (a tenanted project).")
@click.option("--skip-step", "skip_steps", multiple=True, help="A step not to run (repeatable).")
@click.option("--specific-machine", "specific", multiple=True, help="Deploy only to this machine.")
@click.option("--exclude-machine", "excluded", multiple=True, help="Leave this machine out.")
@click.option("--variable", "variables", multiple=True, help="NAME=VALUE for a prompted variable.")
@click.option(
    "--sensitive-variable",
    "sensitive",
    multiple=True,
    help="NAME=ENV_VAR: a sensitive prompted value, read from the environment (never argv).",
)
@click.option(
    "--guided-failure",
    type=click.Choice(["default", "on", "off"]),
    default="default",
    show_default=True,
    help="Wait for a person when an action fails (default: as the project, else the "
    "environment, says).",
)
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@click.option("--wait", is_flag=True, help="Follow the deployment until it ends.")
@click.option(
    "--wait-timeout",
    type=click.FloatRange(min=0),
    default=0,
    help="With --wait: give up waiting after this many seconds (exit 3; 0: no limit).",
)
@space_option
@text_output
@click.pass_context
def deploy(
    ctx: click.Context,
    project: str,
    release: str,
    environment: str,
    tenant: str,
    skip_steps: tuple[str, ...],
    specific: tuple[str, ...],
    excluded: tuple[str, ...],
    variables: tuple[str, ...],
    sensitive: tuple[str, ...],
    guided_failure: str,
    dry_run: bool,
    wait: bool,
    wait_timeout: float,
    space: str,
    output: str,
) -> None:
    """Deploy a release to an environment, as its lifecycle allows.

    \b
      cuttle deploy --project Web --release 1.4.0 --environment Test --wait
      cuttle deploy --project Web --release 1.4.0 --environment Production --dry-run
    """
    prompted = [
        mpb.PromptedValue(name=name, value=value, sensitive=secret)
        for name, value, secret in script_variables(variables, sensitive)
    ]
    request = mpb.DeployRequest(
        space=space,
        project=project,
        release=release,
        environment=environment,
        skip_steps=skip_steps,
        specific_machines=specific,
        excluded_machines=excluded,
        variables=prompted,
        dry_run=dry_run,
        guided_failure=guided_failure,
        tenant=tenant,
    )

    async def work(conn: AdminConnection) -> tuple[mpb.DeployResponse, apb.Task | None, bool]:
        response: mpb.DeployResponse = await conn.deployments.Deploy(
            request, metadata=conn.metadata, timeout=120
        )
        show_response(response, output, dry_run)
        if dry_run or not wait:
            return response, None, False
        try:
            async with asyncio.timeout(wait_timeout or None):
                final = await follow(conn, response.task_id, output)
        except TimeoutError:
            return response, None, True
        return response, final, False

    response, final, timed_out = run_call(ctx, work)
    if timed_out:
        err_console.print(
            f"Stopped waiting after {wait_timeout:g}s; task {response.task_id} goes on"
        )
        sys.exit(WAIT_TIMED_OUT)
    if final is not None:
        sys.exit(0 if final.state == apb.TASK_STATE_SUCCESS else 1)


def show_response(response: mpb.DeployResponse, output: str, dry_run: bool) -> None:
    """Print what the server answered to a deploy (the plan for a dry run)."""
    if output == "json":
        data: dict[str, object] = {"task_id": response.task_id, "state": response.state}
        if dry_run:
            data["plan"] = json.loads(response.plan_json)
        print_json_line(data)
        return
    if dry_run:
        for line in response.plan:
            click.echo(line)
        return
    err_console.print(f"Deploying: task {response.task_id} ({response.state})", highlight=False)


async def follow(conn: AdminConnection, task_id: str, output: str) -> apb.Task | None:
    """Stream a deployment's log and progress until it ends; returns the final task."""
    final: apb.Task | None = None
    shown: dict[str, str] = {}
    # Blocks: the log in messages of whole stored runs (issue 13), not line by line.
    stream = conn.stub.WatchTask(
        apb.WatchTaskRequest(task_id=task_id, accept_blocks=True), metadata=conn.metadata
    )
    progress = _Progress(conn, task_id, shown, output)
    try:
        final = await _events(stream, progress, task_id, shown, output)
    finally:
        progress.stop()
        await progress.wait_stopped()
    return final


async def _events(
    stream: AsyncIterable[apb.TaskEvent],
    progress: _Progress,
    task_id: str,
    shown: dict[str, str],
    output: str,
) -> apb.Task | None:
    final: apb.Task | None = None
    out = sys.stdout.buffer
    async for event in stream:
        kind = event.WhichOneof("kind")
        if output == "json":
            if kind == "blocks":
                out.write(json_lines(event.task_id, block_runs(event.blocks)))
                out.flush()
            else:
                print_json_line(event_json(event))
        elif kind == "blocks":
            out.writelines(prefixed_blocks(event.blocks, server_prefix=False))
            out.flush()
        elif kind == "lines":
            out = sys.stdout.buffer
            for line in event.lines.lines:
                prefix = f"{line.machine}: " if line.machine else ""
                out.write(prefix.encode() + valid_utf8(line.line.text) + b"\n")
            out.flush()
        if kind in ("lines", "blocks", "target_finished", "updated"):
            progress.want()
        if kind == "finished":
            final = event.finished
            # The final tree says all; a read still on its way would only print a part of it.
            progress.stop()
            await progress.wait_stopped()
            if output != "json":
                _print_tree(final, shown)
                err_console.print(
                    f"Task {task_id} {_FINISHED.get(final.state, 'ended')}", highlight=False
                )
    return final


class _Progress:
    """Prints the tree as it changes, reading the task once per burst of events.

    Each event used to wait for a read of the whole task (GetTask) before the next event was
    taken: a deployment to N machines asked the server for its whole tree about N times per
    step, and its end reached the CLI only after all of them. Now events are taken as they
    come; a read starts when one is wanted and none is on its way, and sees every change of the
    events that came meanwhile. A read that fails fails the follow at the next event, as before.
    """

    def __init__(self, conn: AdminConnection, task_id: str, shown: dict[str, str], output: str):
        self._conn = conn
        self._task_id = task_id
        self._shown = shown
        self._output = output
        self._wanted = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._stopped = False

    def want(self) -> None:
        """Ask for a read of the tree (text output only); raises what a failed read raised."""
        if self._output == "json" or self._stopped:
            return
        reader = self._reader
        if reader is not None and reader.done() and not reader.cancelled():
            error = reader.exception()
            if error is not None:
                raise error
        self._wanted.set()
        if reader is None:
            self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            await _progress(self._conn, self._task_id, self._shown, self._output)

    def stop(self) -> None:
        """Stop reading (a read on its way is abandoned)."""
        self._stopped = True
        if self._reader is not None:
            self._reader.cancel()

    async def wait_stopped(self) -> None:
        """Wait until the reader has stopped."""
        reader, self._reader = self._reader, None
        if reader is not None:
            await asyncio.wait({reader})
            if not reader.cancelled():
                reader.exception()  # seen: reported by want() or made moot by the end


async def _progress(
    conn: AdminConnection, task_id: str, shown: dict[str, str], output: str
) -> None:
    """Print each step's and machine's state as it changes (text output only)."""
    if output == "json":
        return
    task: apb.Task = await conn.stub.GetTask(
        apb.GetTaskRequest(task_id=task_id), metadata=conn.metadata, timeout=60
    )
    _print_tree(task, shown)
    if task.state != apb.TASK_STATE_WAITING:
        return
    waiting: mpb.ListInterruptionsResponse = await conn.interruptions.ListInterruptions(
        mpb.ListInterruptionsRequest(task_id=task_id, open_only=True),
        metadata=conn.metadata,
        timeout=60,
    )
    for i in waiting.interruptions:
        if shown.get(i.id) == "shown":
            continue
        shown[i.id] = "shown"
        flags = " | ".join("--" + r.replace("_", "-") for r in i.responses)
        err_console.print(
            f"Waiting for a person: {i.title}\n"
            + (f"  {i.instructions}\n" if i.instructions else "")
            + f"  cuttle interruption respond {i.id} {flags} [--note TEXT]",
            highlight=False,
        )


def _print_tree(task: apb.Task, shown: dict[str, str]) -> None:
    names = {n.id: n for n in task.nodes}
    for node in task.nodes:
        if node.kind == "action":
            continue
        if shown.get(node.id) == node.state or node.state in ("pending",):
            continue
        shown[node.id] = node.state
        if node.kind == "step":
            label = f"Step {node.name}"
        else:
            action = names.get(node.parent_id)
            label = f"  {action.name if action else '?'} on {node.name}"
        reason = f" - {node.reason}" if node.reason and node.state != "success" else ""
        err_console.print(f"{label}: {node.state}{reason}", highlight=False)


@click.group()
def interruption() -> None:
    """Deployments waiting for a person: guided failures and manual interventions."""


def _interruption_json(i: mpb.Interruption) -> dict[str, object]:
    return {
        "id": i.id,
        "task_id": i.task_id,
        "kind": i.kind,
        "step": i.step,
        "action": i.action,
        "machine": i.machine,
        "title": i.title,
        "instructions": i.instructions,
        "responsible_teams": list(i.responsible_teams),
        "responses": list(i.responses),
        "created_at": time_or_none(i.created_unix_ms),
        "response": i.response,
        "answered_by": i.answered_by,
        "answered_at": time_or_none(i.answered_unix_ms),
        "note": i.note,
    }


@interruption.command("list")
@click.option("--task", "task_id", default="", help="Only this task's.")
@click.option("--all", "show_all", is_flag=True, help="Answered ones too.")
@listing_output
@click.pass_context
def interruption_list(ctx: click.Context, task_id: str, show_all: bool, output: str) -> None:
    """What waits for a person (open ones, unless --all).

    \b
      cuttle interruption list
      cuttle interruption list --task 3f2c... --output json
    """

    async def work(conn: AdminConnection) -> mpb.ListInterruptionsResponse:
        found: mpb.ListInterruptionsResponse = await conn.interruptions.ListInterruptions(
            mpb.ListInterruptionsRequest(task_id=task_id, open_only=not show_all),
            metadata=conn.metadata,
            timeout=60,
        )
        return found

    found = run_call(ctx, work)
    if output != "table":
        print_data([_interruption_json(i) for i in found.interruptions], output)
        return
    table = Table("Id", "Task", "Kind", "Step / action", "Machine", "Waiting for", "Answer")
    for i in found.interruptions:
        answer = f"{i.response} by {i.answered_by}" if i.response else ", ".join(i.responses)
        table.add_row(i.id, i.task_id, i.kind, f"{i.step} / {i.action}", i.machine, i.title, answer)
    console.print(table)


@interruption.command("respond")
@click.argument("interruption_id")
@click.option("--retry", "answer", flag_value="retry", help="Run the failed action again.")
@click.option("--ignore", "answer", flag_value="ignore", help="Go on as if it had succeeded.")
@click.option("--fail", "answer", flag_value="fail", help="Let the failure stand.")
@click.option(
    "--exclude-machine",
    "answer",
    flag_value="exclude_machine",
    help="Leave the machine out of the rest of the deployment.",
)
@click.option("--proceed", "answer", flag_value="proceed", help="Approve a manual step.")
@click.option("--abort", "answer", flag_value="abort", help="Refuse a manual step.")
@click.option("--note", default="", help="Why (kept in the task log and the audit trail).")
@text_output
@click.pass_context
def interruption_respond(
    ctx: click.Context, interruption_id: str, answer: str | None, note: str, output: str
) -> None:
    """Answer an interruption.

    \b
      cuttle interruption respond 9a1b... --retry
      cuttle interruption respond 9a1b... --proceed --note "checked the dashboards"
    """
    if answer is None:
        raise click.UsageError(
            "choose one of --retry, --ignore, --fail, --exclude-machine, --proceed, --abort"
        )

    async def work(conn: AdminConnection) -> mpb.Interruption:
        answered: mpb.Interruption = await conn.interruptions.RespondInterruption(
            mpb.RespondInterruptionRequest(id=interruption_id, response=answer, note=note),
            metadata=conn.metadata,
            timeout=60,
        )
        return answered

    answered = run_call(ctx, work)
    if output == "json":
        print_json_line(_interruption_json(answered))
        return
    err_console.print(
        f"Answered {answered.response} to {answered.title!r} (task {answered.task_id})",
        highlight=False,
    )


def task_tree(task: apb.Task) -> Tree:
    """A deployment's tree for people: steps, actions, machines, with why and what they set."""
    root = Tree(f"{task.description}")
    branches: dict[str, Tree] = {"": root}
    for node in task.nodes:
        parent = branches.get(node.parent_id, root)
        label = f"{node.name}: {node.state}"
        if node.kind == "machine" and node.attempts > 1:
            label += f" ({node.attempts} runs)"
        if node.kind == "machine" and node.exit_code >= 0 and node.state != "skipped":
            label += f", exit code {node.exit_code}"
        if node.reason and node.state != "success":
            label += f" - {node.reason}"
        branch = parent.add(Text(label))
        for variable in node.output_variables:
            branch.add(Text(f"output {variable.name} = {variable.value}"))
        branches[node.id] = branch
    return root


@click.command("promote")
@click.option("--project", required=True, help="The project.")
@click.option("--from", "from_environment", required=True, help="Where the release is now.")
@click.option("--to", "to_environment", required=True, help="Where to deploy it.")
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@click.option("--wait", is_flag=True, help="Follow the deployment until it ends.")
@space_option
@text_output
@click.pass_context
def promote(
    ctx: click.Context,
    project: str,
    from_environment: str,
    to_environment: str,
    dry_run: bool,
    wait: bool,
    space: str,
    output: str,
) -> None:
    """Deploy to one environment the release last deployed with success to another.

    \b
      cuttle promote --project Web --from Dev --to Test --wait
    """
    request = mpb.PromoteRequest(
        space=space,
        project=project,
        from_environment=from_environment,
        to_environment=to_environment,
        dry_run=dry_run,
    )

    async def work(conn: AdminConnection) -> tuple[mpb.DeployResponse, apb.Task | None]:
        response: mpb.DeployResponse = await conn.deployments.Promote(
            request, metadata=conn.metadata, timeout=120
        )
        if output != "json":
            err_console.print(f"Promoting release {response.release}", highlight=False)
        show_response(response, output, dry_run)
        if dry_run or not wait:
            return response, None
        return response, await follow(conn, response.task_id, output)

    _, final = run_call(ctx, work)
    if final is not None:
        sys.exit(0 if final.state == apb.TASK_STATE_SUCCESS else 1)

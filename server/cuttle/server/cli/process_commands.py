"""`cuttle process ...`: edit a project's deployment process step by step."""

from __future__ import annotations

from typing import Any

import click
from pydantic import ValidationError
from rich.table import Table

from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.server.cli.connection import AdminConnection
from cuttle.server.cli.context import console, err_console, run_call, space_option
from cuttle.server.cli.json_output import listing_output, print_data
from cuttle.server.cli.process_actions import action_options, build_action
from cuttle.server.cli.process_actions import register as register_actions
from cuttle.server.model import documents as d

project_option = click.option("--project", required=True, help="The project.")


@click.group()
def process() -> None:
    """A project's deployment process: ordered steps, each with one or more actions."""


register_actions(process)


async def _read(conn: AdminConnection, space: str, project: str) -> tuple[mpb.Document, d.Project]:
    doc: mpb.Document = await conn.model.GetDocument(
        mpb.GetDocumentRequest(space=space, kind="project", name=project), metadata=conn.metadata
    )
    return doc, d.Project.model_validate_json(doc.spec_json)


async def _write(conn: AdminConnection, space: str, doc: mpb.Document, project: d.Project) -> None:
    # expected_revision: two people editing the process at once must not lose a step.
    await conn.model.UpdateDocument(
        mpb.UpdateDocumentRequest(
            space=space,
            kind="project",
            name=doc.name,
            spec_json=project.model_dump_json(),
            expected_revision=doc.revision,
        ),
        metadata=conn.metadata,
    )


@process.command("list")
@project_option
@space_option
@listing_output
@click.pass_context
def process_list(ctx: click.Context, project: str, space: str, output: str) -> None:
    """The steps and their actions, in order, with start trigger, condition and window.

    \b
    Example:
      cuttle process list --project Web
    """
    _, spec = run_call(ctx, lambda conn: _read(conn, space, project))
    if output != "table":
        print_data(spec.process.model_dump(mode="json", exclude_defaults=True), output)
        return
    table = Table("#", "Step", "Target tags", "Start", "Condition", "Window", "Actions")
    for index, step in enumerate(spec.process.steps, 1):
        table.add_row(
            str(index),
            step.name,
            ", ".join(step.target_tags) or "-",
            step.start_trigger.replace("_", " "),
            step.condition,
            str(step.window_size or "-"),
            ", ".join(f"{a.name} ({a.type})" for a in step.actions),
        )
    console.print(table)


@process.command("add-step")
@project_option
@click.option("--name", required=True, help="Step name (also its first action's name).")
@click.option("--target-tag", "target_tags", multiple=True, help="Run on machines with this tag.")
@action_options
@click.option("--with-previous", is_flag=True, help="Start together with the previous step.")
@click.option(
    "--condition",
    type=click.Choice(["success", "failure", "always", "variable"]),
    default="success",
    show_default=True,
)
@click.option("--condition-expression", default="", help="For --condition variable.")
@click.option("--window-size", type=click.IntRange(1), help="Rolling: machines at once.")
@click.option("--position", type=click.IntRange(1), help="1-based position (default: last).")
@space_option
@click.pass_context
def add_step(
    ctx: click.Context,
    /,
    project: str,
    name: str,
    target_tags: tuple[str, ...],
    with_previous: bool,
    condition: str,
    condition_expression: str,
    window_size: int | None,
    position: int | None,
    space: str,
    **options: Any,
) -> None:
    """Add a step with one action (add more with `cuttle process add-action`).

    The action options (--environment, --exclude-environment, --channel, --tenant-tag,
    --retries, --machine-condition, --property) scope and tune the step's first action.

    \b
    Examples:
      cuttle process add-step --project Web --name "Deploy" --target-tag web-server \\
          --script 'echo deploying #{Octopus.Release.Number}' --window-size 2
      cuttle process add-step --project Web --name Approve --type manual_intervention \\
          --instructions "Check the dashboards" --environment Production
      cuttle process add-step --project Web --name Notify --condition always --with-previous \\
          --script 'echo done'
    """
    action = build_action(name, options)
    try:
        step = d.Step(
            name=name,
            target_tags=list(target_tags),
            start_trigger="with_previous" if with_previous else "after_previous",
            condition=condition,  # type: ignore[arg-type]
            condition_expression=condition_expression,
            window_size=window_size,
            actions=[action],
        )
    except ValidationError as exc:
        raise click.UsageError(_first_problem(exc)) from None

    async def work(conn: AdminConnection) -> None:
        doc, spec = await _read(conn, space, project)
        steps = list(spec.process.steps)
        steps.insert(len(steps) if position is None else position - 1, step)
        try:
            updated = spec.model_copy(update={"process": d.Process(steps=steps)})
        except ValidationError as exc:
            raise click.UsageError(_first_problem(exc)) from None
        await _write(conn, space, doc, updated)

    run_call(ctx, work)
    err_console.print(f"added step {name} to {project}", highlight=False)


@process.command("remove-step")
@project_option
@click.option("--name", required=True)
@space_option
@click.pass_context
def remove_step(ctx: click.Context, project: str, name: str, space: str) -> None:
    """Remove a step (and its actions).

    \b
    Example:
      cuttle process remove-step --project Web --name Notify
    """

    async def work(conn: AdminConnection) -> None:
        doc, spec = await _read(conn, space, project)
        steps = [s for s in spec.process.steps if s.name.casefold() != name.casefold()]
        if len(steps) == len(spec.process.steps):
            raise click.ClickException(f"project {project} has no step {name!r}")
        await _write(conn, space, doc, spec.model_copy(update={"process": d.Process(steps=steps)}))

    run_call(ctx, work)
    err_console.print(f"removed step {name} from {project}", highlight=False)


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg'].removeprefix('Value error, ')}" if where else error["msg"]

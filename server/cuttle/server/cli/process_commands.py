"""`cuttle process ...`: edit a project's deployment process step by step."""

from __future__ import annotations

from pathlib import Path

import click
from pydantic import ValidationError
from rich.table import Table

from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.server.cli.connection import AdminConnection
from cuttle.server.cli.context import console, err_console, run_call, space_option
from cuttle.server.cli.json_output import listing_output, print_data
from cuttle.server.model import documents as d

project_option = click.option("--project", required=True, help="The project.")


@click.group()
def process() -> None:
    """A project's deployment process: ordered steps, each with one or more actions."""


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
    """The steps and their actions, in order."""
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
@click.option(
    "--type",
    "action_type",
    type=click.Choice(["run_script", "health_check", "manual_intervention"]),
    default="run_script",
    show_default=True,
)
@click.option("--syntax", type=click.Choice(["bash", "python", "sh", "pwsh"]), default="bash")
@click.option("--script", "body", default=None, help="Inline script body.")
@click.option(
    "--script-file", type=click.Path(path_type=Path, dir_okay=False), help="Script from a file."
)
@click.option("--instructions", default="", help="For manual_intervention steps.")
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
    project: str,
    name: str,
    target_tags: tuple[str, ...],
    action_type: str,
    syntax: str,
    body: str | None,
    script_file: Path | None,
    instructions: str,
    with_previous: bool,
    condition: str,
    condition_expression: str,
    window_size: int | None,
    position: int | None,
    space: str,
) -> None:
    """Add a step with one action.

    \b
      cuttle process add-step --project Web --name "Deploy" --target-tag web-server \\
          --script 'echo deploying #{Octopus.Release.Number}'
      cuttle process add-step --project Web --name Approve --type manual_intervention \\
          --instructions "Check the dashboards"
    """
    if script_file is not None:
        if body is not None:
            raise click.UsageError("give --script or --script-file, not both")
        body = script_file.read_text(encoding="utf-8")
    try:
        action = d.Action(
            name=name,
            type=action_type,  # type: ignore[arg-type]  # click.Choice limits it
            script=d.Script(syntax=syntax, body=body) if action_type == "run_script" else None,  # type: ignore[arg-type]
            instructions=instructions,
        )
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
    """Remove a step (and its actions)."""

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

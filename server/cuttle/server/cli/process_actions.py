"""`cuttle process add-action/update-step`: child actions, scoping and conditions of steps.

The options are named after the document's fields (YAML's `environments`,
`excluded_environments`, `start_trigger`...), so what a command does reads the same in a file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from cuttle.server.cli.context import err_console, run_call, space_option
from cuttle.server.cli.project_documents import edit_project, first_problem, project_option
from cuttle.server.cli.suggest import did_you_mean
from cuttle.server.model import documents as d

_ACTION_OPTIONS = [
    click.option(
        "--type",
        "action_type",
        type=click.Choice(["run_script", "health_check", "manual_intervention"]),
        default="run_script",
        show_default=True,
    ),
    click.option("--syntax", type=click.Choice(["bash", "python", "sh", "pwsh"]), default="bash"),
    click.option("--script", "body", default=None, help="Inline script body."),
    click.option(
        "--script-file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="Script from a file.",
    ),
    click.option("--instructions", default="", help="For manual_intervention actions."),
    click.option(
        "--responsible-team", "responsible_teams", multiple=True, help="Who may answer it."
    ),
    click.option(
        "--environment",
        "environments",
        multiple=True,
        help="Run only in this environment (repeatable).",
    ),
    click.option(
        "--exclude-environment",
        "excluded_environments",
        multiple=True,
        help="Never run in this environment (repeatable).",
    ),
    click.option(
        "--channel", "channels", multiple=True, help="Run only for this channel (repeatable)."
    ),
    click.option(
        "--tenant-tag",
        "tenant_tags",
        multiple=True,
        help="Run only for tenants with this tag, 'Tag set/Tag' (repeatable).",
    ),
    click.option("--retries", type=click.IntRange(0, 100), default=0, help="Retries on failure."),
    click.option(
        "--machine-condition",
        default="",
        help="#{...} expression evaluated per machine; it runs where true.",
    ),
    click.option(
        "--property",
        "properties",
        multiple=True,
        metavar="NAME=VALUE",
        help="An action property, e.g. Octopus.Action.MaxParallelism=2 (repeatable).",
    ),
    click.option("--required", is_flag=True, help="It cannot be skipped at deploy time."),
]


def action_options(func: Any) -> Any:
    """The options that describe one action (add-step's first action, add-action's)."""
    for option in reversed(_ACTION_OPTIONS):
        func = option(func)
    return func


def build_action(name: str, options: dict[str, Any]) -> d.Action:
    """An action from action_options' values; a usage error names the field that is wrong."""
    body: str | None = options["body"]
    script_file: Path | None = options["script_file"]
    if script_file is not None:
        if body is not None:
            raise click.UsageError("give --script or --script-file, not both")
        body = script_file.read_text(encoding="utf-8")
    properties: dict[str, str] = {}
    for item in options["properties"]:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--property {item!r}: expected NAME=VALUE")
        properties[key] = value
    action_type = options["action_type"]
    try:
        return d.Action(
            name=name,
            type=action_type,
            script=d.Script(syntax=options["syntax"], body=body)
            if action_type == "run_script"
            else None,
            instructions=options["instructions"],
            responsible_teams=list(options["responsible_teams"]),
            environments=list(options["environments"]),
            excluded_environments=list(options["excluded_environments"]),
            channels=list(options["channels"]),
            tenant_tags=list(options["tenant_tags"]),
            retries=options["retries"],
            machine_condition=options["machine_condition"],
            properties=properties,
            required=options["required"],
        )
    except ValidationError as exc:
        raise click.UsageError(first_problem(exc)) from None


def find_step(spec: d.Project, name: str) -> d.Step:
    """The step called name, or an error listing the steps (with a close one)."""
    for step in spec.process.steps:
        if step.name.casefold() == name.casefold():
            return step
    names = [s.name for s in spec.process.steps]
    raise click.ClickException(
        f"project {spec.name} has no step {name!r}{did_you_mean(name, names)}"
        + (f" (steps: {', '.join(names)})" if names else " (its process has no steps)")
    )


def _replace_step(spec: d.Project, old: d.Step, new: dict[str, Any]) -> d.Project:
    steps = []
    for step in spec.process.steps:
        if step is old:
            try:
                step = d.Step.model_validate({**step.model_dump(), **new})
            except ValidationError as exc:
                raise click.UsageError(f"step {old.name}: {first_problem(exc)}") from None
        steps.append(step)
    try:
        return spec.model_copy(update={"process": d.Process(steps=steps)})
    except ValidationError as exc:
        raise click.UsageError(first_problem(exc)) from None


def register(process: click.Group) -> None:
    """Add these commands to `cuttle process`."""
    process.add_command(add_action)
    process.add_command(update_step)


@click.command("add-action")
@project_option
@click.option("--step", required=True, help="The step the action joins.")
@click.option("--name", required=True, help="The action's name (unique in the process).")
@action_options
@space_option
@click.pass_context
def add_action(
    ctx: click.Context, /, project: str, step: str, name: str, space: str, **options: Any
) -> None:
    """Add a child action to a step: it runs after the step's other actions, on its machines.

    \b
    Examples:
      cuttle process add-action --project Web --step Deploy --name "Warm cache" \\
          --script 'curl -fsS localhost/warm' --environment Production
      cuttle process add-action --project Web --step Deploy --name Smoke \\
          --script ./smoke.sh --exclude-environment Dev --retries 2
    """
    action = build_action(name, options)

    def edit(spec: d.Project) -> d.Project:
        current = find_step(spec, step)
        return _replace_step(
            spec, current, {"actions": [*(a.model_dump() for a in current.actions), action]}
        )

    run_call(ctx, lambda conn: edit_project(conn, space, project, edit))
    err_console.print(f"added action {name} to step {step} of {project}", highlight=False)


@click.command("update-step")
@project_option
@click.option("--name", required=True, help="The step to change.")
@click.option(
    "--target-tag", "target_tags", multiple=True, help="Replace the target tags (repeatable)."
)
@click.option(
    "--start-trigger",
    type=click.Choice(["after_previous", "with_previous"]),
    help="Start after the previous step, or together with it.",
)
@click.option("--condition", type=click.Choice(["success", "failure", "always", "variable"]))
@click.option("--condition-expression", default=None, help="For --condition variable.")
@click.option(
    "--window-size",
    type=click.IntRange(0),
    default=None,
    help="Rolling: machines at once (0: all at once).",
)
@space_option
@click.pass_context
def update_step(
    ctx: click.Context,
    project: str,
    name: str,
    target_tags: tuple[str, ...],
    start_trigger: str | None,
    condition: str | None,
    condition_expression: str | None,
    window_size: int | None,
    space: str,
) -> None:
    """Change a step's target tags, start trigger, condition or rolling window.

    \b
    Examples:
      cuttle process update-step --project Web --name Deploy --window-size 2
      cuttle process update-step --project Web --name Notify --condition always
      cuttle process update-step --project Web --name Migrate --condition variable \\
          --condition-expression '#{if RunMigrations}true#{/if}'
    """
    changes: dict[str, Any] = {}
    if target_tags:
        changes["target_tags"] = list(target_tags)
    if start_trigger is not None:
        changes["start_trigger"] = start_trigger
    if condition is not None:
        changes["condition"] = condition
        if condition != "variable":
            changes["condition_expression"] = ""
    if condition_expression is not None:
        changes["condition_expression"] = condition_expression
    if window_size is not None:
        changes["window_size"] = window_size or None
    if not changes:
        raise click.UsageError("nothing to change: give at least one option")

    def edit(spec: d.Project) -> d.Project:
        return _replace_step(spec, find_step(spec, name), changes)

    run_call(ctx, lambda conn: edit_project(conn, space, project, edit))
    err_console.print(f"updated step {name} of {project}: {', '.join(changes)}", highlight=False)

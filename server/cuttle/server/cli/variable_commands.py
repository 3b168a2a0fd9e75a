"""`cuttle variable list/delete`: a project's variable values (sensitive ones never shown)."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from cuttle.server.cli.confirm import confirm, yes_option
from cuttle.server.cli.context import console, err_console, run_call, space_option
from cuttle.server.cli.json_output import listing_output, print_data
from cuttle.server.cli.project_documents import edit_project, project_option, read_project
from cuttle.server.cli.suggest import did_you_mean
from cuttle.server.model import documents as d

SENSITIVE = "(sensitive)"

_SCOPE_OPTIONS = (
    ("environment", "environments", "Scope: environment"),
    ("role", "roles", "Scope: target tag"),
    ("machine", "machines", "Scope: machine"),
    ("step", "actions", "Scope: step or action"),
    ("channel", "channels", "Scope: channel"),
    ("tenant", "tenants", "Scope: tenant"),
    ("tenant-tag", "tenant_tags", "Scope: tenant tag 'Tag set/Tag'"),
    ("process", "processes", "Scope: 'deployment' or a runbook"),
)


def _scope_options(func: Any) -> Any:
    for option, field, text in reversed(_SCOPE_OPTIONS):
        func = click.option(f"--{option}", field, multiple=True, help=f"{text} (repeatable).")(func)
    return func


def scope_text(scope: d.Scope) -> str:
    """A scope as people read it: 'environments=Dev,Test; roles=web' or '-'."""
    parts = [f"{k}={','.join(v)}" for k, v in scope.model_dump().items() if v]
    return "; ".join(parts) or "-"


def shown_value(variable: d.Variable) -> str | None:
    """The value to print: never a sensitive one (the server does not send it either)."""
    return SENSITIVE if variable.sensitive else variable.value


@click.command("list")
@project_option
@click.option("--name", default="", help="Only values of this variable.")
@space_option
@listing_output
@click.pass_context
def variable_list(ctx: click.Context, project: str, name: str, space: str, output: str) -> None:
    """A project's variable values with their scopes; sensitive values are never shown.

    \b
    Examples:
      cuttle variable list --project Web
      cuttle variable list --project Web --name DbPassword --output json
    """
    _, spec = run_call(ctx, lambda conn: read_project(conn, space, project))
    values = [v for v in spec.variables if not name or v.name.casefold() == name.casefold()]
    if name and not values:
        raise click.ClickException(
            f"project {spec.name} has no variable {name!r}"
            + did_you_mean(name, [v.name for v in spec.variables])
        )
    if output != "table":
        rows = []
        for v in values:
            row = v.model_dump(mode="json", exclude_defaults=True)
            row.pop("value", None)
            row["name"] = v.name
            # JSON readers test `sensitive`; the value of a sensitive one is never sent anyway.
            row["value"] = None if v.sensitive else v.value
            row["sensitive"] = v.sensitive
            rows.append(row)
        print_data(rows, output)
        return
    table = Table("Name", "Value", "Scope", "Prompt")
    for v in values:
        table.add_row(
            v.name,
            shown_value(v) or "",
            scope_text(v.scope),
            (v.prompt.label or "yes") if v.prompt else "",
        )
    console.print(table)


@click.command("delete")
@click.argument("name")
@project_option
@_scope_options
@click.option(
    "--all-scopes", is_flag=True, help="Delete every value of the variable, whatever its scope."
)
@space_option
@yes_option
@click.pass_context
def variable_delete(
    ctx: click.Context,
    /,
    name: str,
    project: str,
    all_scopes: bool,
    space: str,
    yes: bool,
    **scope_fields: tuple[str, ...],
) -> None:
    """Delete a variable's value with exactly the scope given (none: the unscoped value).

    \b
    Examples:
      cuttle variable delete Greeting --project Web --environment Dev --yes
      cuttle variable delete Greeting --project Web --all-scopes --yes
    """
    scope = d.Scope(**{k: list(v) for k, v in scope_fields.items()})
    if all_scopes and not scope.is_empty():
        raise click.UsageError("give scope options or --all-scopes, not both")

    def chosen(spec: d.Project) -> list[d.Variable]:
        named = [v for v in spec.variables if v.name.casefold() == name.casefold()]
        if not named:
            raise click.ClickException(
                f"project {spec.name} has no variable {name!r}"
                + did_you_mean(name, [v.name for v in spec.variables])
            )
        if all_scopes:
            return named
        key = _scope_key(scope)
        matching = [v for v in named if _scope_key(v.scope) == key]
        if not matching:
            raise click.ClickException(
                f"variable {name} of project {spec.name} has no value scoped "
                f"({scope_text(scope)}); its scopes are: "
                + " | ".join(scope_text(v.scope) for v in named)
                + " (or pass --all-scopes)"
            )
        return matching

    _, spec = run_call(ctx, lambda conn: read_project(conn, space, project))
    going = chosen(spec)
    what = (
        f"delete {len(going)} value(s) of variable {name} of project {spec.name}"
        if all_scopes
        else f"delete variable {name} ({scope_text(scope)}) of project {spec.name}"
    )
    confirm(what, yes=yes)

    def edit(current: d.Project) -> d.Project:
        gone = {id(v) for v in chosen(current)}
        return current.model_copy(
            update={"variables": [v for v in current.variables if id(v) not in gone]}
        )

    run_call(ctx, lambda conn: edit_project(conn, space, project, edit))
    err_console.print("deleted" + what.removeprefix("delete"), highlight=False)


def _scope_key(scope: d.Scope) -> list[tuple[str, list[str]]]:
    # A scope is a set of names per kind, compared case-insensitively, as the server does.
    return sorted((k, sorted({x.casefold() for x in v})) for k, v in scope.model_dump().items())

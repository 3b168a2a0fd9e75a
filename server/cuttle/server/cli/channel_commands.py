"""`cuttle channel ...`: a project's release streams, with their version rules and lifecycle."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from cuttle.server.cli.confirm import confirm, yes_option
from cuttle.server.cli.connection import AdminConnection
from cuttle.server.cli.context import console, err_console, run_call, space_option
from cuttle.server.cli.dependents import release_count
from cuttle.server.cli.json_output import listing_output, print_data
from cuttle.server.cli.project_documents import edit_project, project_option, read_project
from cuttle.server.cli.suggest import did_you_mean
from cuttle.server.domain.versions import VersionError, parse_version_range
from cuttle.server.model import documents as d


@click.group()
def channel() -> None:
    """A project's channels: which versions a release may have, and its lifecycle."""


def _find(spec: d.Project, name: str) -> d.Channel:
    for found in spec.channels:
        if found.name.casefold() == name.casefold():
            return found
    names = [c.name for c in spec.channels]
    raise click.ClickException(
        f"project {spec.name} has no channel {name!r}{did_you_mean(name, names)} "
        f"(it has: {', '.join(names)})"
    )


def _check_range(version_range: str | None) -> None:
    if version_range:
        try:
            parse_version_range(version_range)
        except VersionError as exc:
            raise click.BadParameter(str(exc), param_hint="--version-range") from None


_rule_options = [
    click.option("--description", default=None, help="What the channel is for."),
    click.option(
        "--version-range",
        default=None,
        help="NuGet range a release version must be in, e.g. '[1.0,2.0)' ('' for any).",
    ),
    click.option(
        "--prerelease-pattern",
        default=None,
        help="Regular expression the pre-release tag must match; '^$' allows none.",
    ),
    click.option(
        "--lifecycle",
        default=None,
        help="Lifecycle of this channel's releases ('' for the project's).",
    ),
    click.option(
        "--tenant-tag",
        "tenant_tags",
        multiple=True,
        help="Only tenants with this tag, 'Tag set/Tag' (repeatable; replaces).",
    ),
    click.option("--default", "is_default", is_flag=True, help="Make it the default channel."),
]


def _rule_decorators(func: Any) -> Any:
    for option in reversed(_rule_options):
        func = option(func)
    return func


def _changes(
    description: str | None,
    version_range: str | None,
    prerelease_pattern: str | None,
    lifecycle: str | None,
    tenant_tags: tuple[str, ...],
) -> dict[str, object]:
    _check_range(version_range)
    changes: dict[str, object] = {}
    if description is not None:
        changes["description"] = description
    if version_range is not None:
        changes["version_range"] = version_range
    if prerelease_pattern is not None:
        changes["prerelease_pattern"] = prerelease_pattern
    if lifecycle is not None:
        changes["lifecycle"] = lifecycle or None
    if tenant_tags:
        changes["tenant_tags"] = list(tenant_tags)
    return changes


def _with_default(channels: list[d.Channel], name: str) -> list[d.Channel]:
    return [
        c.model_copy(update={"is_default": c.name.casefold() == name.casefold()}) for c in channels
    ]


@channel.command("list")
@project_option
@space_option
@listing_output
@click.pass_context
def channel_list(ctx: click.Context, project: str, space: str, output: str) -> None:
    """A project's channels with their version rules and lifecycle.

    \b
    Example:
      cuttle channel list --project Web
    """
    _, spec = run_call(ctx, lambda conn: read_project(conn, space, project))
    if output != "table":
        print_data([c.model_dump(mode="json") for c in spec.channels], output)
        return
    table = Table("Name", "Default", "Version range", "Pre-release", "Lifecycle", "Tenant tags")
    for c in spec.channels:
        table.add_row(
            c.name,
            "yes" if c.is_default else "",
            c.version_range or "any",
            c.prerelease_pattern or "any",
            c.lifecycle or f"(project's: {spec.lifecycle})",
            ", ".join(c.tenant_tags) or "-",
        )
    console.print(table)


@channel.command("create")
@click.argument("name")
@project_option
@_rule_decorators
@space_option
@click.pass_context
def channel_create(
    ctx: click.Context,
    name: str,
    project: str,
    description: str | None,
    version_range: str | None,
    prerelease_pattern: str | None,
    lifecycle: str | None,
    tenant_tags: tuple[str, ...],
    is_default: bool,
    space: str,
) -> None:
    """Add a channel to a project.

    \b
    Examples:
      cuttle channel create Hotfix --project Web --version-range '[1.4,1.5)' \\
          --prerelease-pattern '^$' --lifecycle Hotfixes
      cuttle channel create Beta --project Web --prerelease-pattern '^beta'
    """
    changes = _changes(description, version_range, prerelease_pattern, lifecycle, tenant_tags)

    def edit(spec: d.Project) -> d.Project:
        if any(c.name.casefold() == name.casefold() for c in spec.channels):
            raise click.ClickException(f"project {spec.name} already has a channel {name!r}")
        channels = [*spec.channels, d.Channel(name=name, **changes)]  # type: ignore[arg-type]
        if is_default:
            channels = _with_default(channels, name)
        return spec.model_copy(update={"channels": channels})

    run_call(ctx, lambda conn: edit_project(conn, space, project, edit))
    err_console.print(f"created channel {name} in project {project}", highlight=False)


@channel.command("update")
@click.argument("name")
@project_option
@click.option("--rename", "new_name", default=None, help="A new name for the channel.")
@_rule_decorators
@space_option
@click.pass_context
def channel_update(
    ctx: click.Context,
    name: str,
    project: str,
    new_name: str | None,
    description: str | None,
    version_range: str | None,
    prerelease_pattern: str | None,
    lifecycle: str | None,
    tenant_tags: tuple[str, ...],
    is_default: bool,
    space: str,
) -> None:
    """Change a channel's rules; options not given keep their value.

    \b
    Examples:
      cuttle channel update Hotfix --project Web --version-range '[1.5,1.6)'
      cuttle channel update Hotfix --project Web --lifecycle ''   # back to the project's
      cuttle channel update Stable --project Web --default
    """
    changes = _changes(description, version_range, prerelease_pattern, lifecycle, tenant_tags)
    if new_name is not None:
        changes["name"] = new_name
    if not changes and not is_default:
        raise click.UsageError("nothing to change: give at least one option")

    def edit(spec: d.Project) -> d.Project:
        current = _find(spec, name)
        channels = [c.model_copy(update=changes) if c is current else c for c in spec.channels]
        if is_default:
            channels = _with_default(channels, str(changes.get("name", current.name)))
        return spec.model_copy(update={"channels": channels})

    run_call(ctx, lambda conn: edit_project(conn, space, project, edit))
    err_console.print(f"updated channel {new_name or name} of project {project}", highlight=False)


@channel.command("delete")
@click.argument("name")
@project_option
@space_option
@yes_option
@click.pass_context
def channel_delete(ctx: click.Context, name: str, project: str, space: str, yes: bool) -> None:
    """Delete a channel (not the default one; make another the default first).

    Releases keep the channel name they were created in.

    \b
    Example:
      cuttle channel delete Beta --project Web --yes
    """

    async def inspect(conn: AdminConnection) -> int:
        _, spec = await read_project(conn, space, project)
        found = _find(spec, name)
        if found.is_default:
            raise click.ClickException(
                f"channel {found.name} is the default channel of {spec.name}: make another "
                "channel the default first (cuttle channel update NAME --default)"
            )
        return await release_count(conn, space, spec.name, found.name)

    releases = run_call(ctx, inspect)
    kept = f" ({releases} release(s) were created in it; they stay)" if releases else ""
    confirm(f"delete channel {name} of project {project}{kept}", yes=yes)

    def edit(spec: d.Project) -> d.Project:
        current = _find(spec, name)
        return spec.model_copy(update={"channels": [c for c in spec.channels if c is not current]})

    run_call(ctx, lambda conn: edit_project(conn, space, project, edit))
    err_console.print(f"deleted channel {name} of project {project}", highlight=False)

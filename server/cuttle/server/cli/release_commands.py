"""`cuttle release ...`: create releases, list them, see where they may go next."""

from __future__ import annotations

import json
import sys

import click
from rich.table import Table

from cuttle.protocol.v1 import admin_pb2 as apb
from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.server.cli.confirm import confirm, yes_option
from cuttle.server.cli.connection import AdminConnection
from cuttle.server.cli.context import (
    console,
    err_console,
    format_ms,
    run_call,
    space_option,
)
from cuttle.server.cli.deploy_commands import follow, show_response
from cuttle.server.cli.json_output import (
    listing_output,
    message_json,
    print_data,
    print_json_line,
    text_output,
    time_or_none,
)

project_option = click.option("--project", required=True, help="The project.")
release_option = click.option("--release", "version", required=True, help="The release version.")


@click.group()
def release() -> None:
    """Releases: immutable snapshots of a project's process and variables under a version."""


def _release_json(r: mpb.Release) -> dict[str, object]:
    # id, project, version, channel, notes, created_at, created_by, variables_snapshot_at and
    # snapshot (only `release show` has one; null elsewhere).
    return message_json(r)


@release.command("create")
@project_option
@click.option("--version", default="", help="Default: next from the project's version template.")
@click.option("--channel", default="", help="Default: the project's default channel.")
@click.option("--notes", default="", help="Release notes.")
@click.option(
    "--package",
    "packages",
    multiple=True,
    metavar="NAME:VERSION",
    help="A package version for an action, step or package id (default: the newest in the "
    "feed that fits the channel).",
)
@space_option
@text_output
@click.pass_context
def release_create(
    ctx: click.Context,
    project: str,
    version: str,
    channel: str,
    notes: str,
    packages: tuple[str, ...],
    space: str,
    output: str,
) -> None:
    """Create a release; a version outside the channel's rules is refused.

    \b
      cuttle release create --project Web --version 1.4.0
      cuttle release create --project Web --version 1.4.1-hotfix.1 --channel Hotfix
      cuttle release create --project Web --version 1.4.0 --package web:1.4.0
    """

    async def work(conn: AdminConnection) -> mpb.Release:
        created: mpb.Release = await conn.releases.CreateRelease(
            mpb.CreateReleaseRequest(
                space=space,
                project=project,
                version=version,
                channel=channel,
                notes=notes,
                packages=packages,
            ),
            metadata=conn.metadata,
        )
        return created

    created = run_call(ctx, work)
    if output == "json":
        print_json_line(_release_json(created))
    else:
        console.print(
            f"created release {created.version} of {project} in channel {created.channel}",
            highlight=False,
        )
        for p in created.packages:
            console.print(f"  {p.action}: {p.package_id} {p.version}", highlight=False)


@release.command("list")
@project_option
@click.option("--channel", default="")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@space_option
@listing_output
@click.pass_context
def release_list(
    ctx: click.Context, project: str, channel: str, limit: int, space: str, output: str
) -> None:
    """A project's releases, newest first.

    \b
    Example:
      cuttle release list --project Web --channel Hotfix
    """

    async def work(conn: AdminConnection) -> list[mpb.Release]:
        found: list[mpb.Release] = []
        token = ""
        while len(found) < limit:
            page: mpb.ListReleasesResponse = await conn.releases.ListReleases(
                mpb.ListReleasesRequest(
                    space=space,
                    project=project,
                    channel=channel,
                    page_size=min(500, limit - len(found)),
                    page_token=token,
                ),
                metadata=conn.metadata,
            )
            found.extend(page.releases)
            token = page.next_page_token
            if not token:
                break
        return found

    releases = run_call(ctx, work)
    if output != "table":
        print_data([_release_json(r) for r in releases], output)
        return
    table = Table("Version", "Channel", "Created", "By", "Notes")
    for r in releases:
        table.add_row(r.version, r.channel, format_ms(r.created_unix_ms), r.created_by, r.notes)
    console.print(table)


@release.command("show")
@project_option
@release_option
@space_option
@listing_output
@click.pass_context
def release_show(ctx: click.Context, project: str, version: str, space: str, output: str) -> None:
    """A release and its snapshot (sensitive values are never shown).

    \b
    Example:
      cuttle release show --project Web --release 1.4.0 --output json
    """

    async def work(conn: AdminConnection) -> mpb.Release:
        found: mpb.Release = await conn.releases.GetRelease(
            mpb.GetReleaseRequest(space=space, project=project, version=version),
            metadata=conn.metadata,
        )
        return found

    found = run_call(ctx, work)
    data = _release_json(found)
    if output != "table":
        print_data(data, output)
        return
    console.print(f"Release {found.version} of {project} ({found.channel})", highlight=False)
    if found.packages:
        table = Table("Step", "Action", "Package", "Version", "SHA-256")
        for p in found.packages:
            table.add_row(p.step, p.action, p.package_id, p.version, p.sha256)
        console.print(table)
    console.print_json(json.dumps(data.get("snapshot") or {}))


@release.command("progression")
@project_option
@release_option
@space_option
@listing_output
@click.pass_context
def release_progression(
    ctx: click.Context, project: str, version: str, space: str, output: str
) -> None:
    """Which phases are complete and which environments the release may go to next."""

    async def work(conn: AdminConnection) -> mpb.Progression:
        found: mpb.Progression = await conn.releases.GetProgression(
            mpb.GetReleaseRequest(space=space, project=project, version=version),
            metadata=conn.metadata,
        )
        return found

    p = run_call(ctx, work)
    if output != "table":
        print_data(
            {
                "lifecycle": p.lifecycle,
                "phases": [
                    {
                        "name": ph.name,
                        "environments": list(ph.environments),
                        "deployed_environments": list(ph.deployed_environments),
                        "required": ph.required,
                        "optional": ph.optional,
                        "complete": ph.complete,
                        "open": ph.open,
                    }
                    for ph in p.phases
                ],
                "allowed_environments": list(p.allowed_environments),
                "next_environments": list(p.next_environments),
                "automatic_environments": list(p.automatic_environments),
                "reasons": dict(p.reasons),
            },
            output,
        )
        return
    table = Table("Phase", "Environments", "Deployed", "Needs", "State")
    for ph in p.phases:
        state = "complete" if ph.complete else "open" if ph.open else "closed"
        if ph.optional:
            state += " (optional)"
        table.add_row(
            ph.name,
            ", ".join(ph.environments),
            ", ".join(ph.deployed_environments) or "-",
            str(ph.required),
            state,
        )
    console.print(f"Lifecycle {p.lifecycle}", highlight=False)
    console.print(table)
    console.print(f"May deploy to: {', '.join(p.allowed_environments) or 'nothing yet'}")


@release.command("update-variables")
@project_option
@release_option
@space_option
@click.pass_context
def release_update_variables(ctx: click.Context, project: str, version: str, space: str) -> None:
    """Re-take the release's variable snapshot from the project as it is now (audited)."""

    async def work(conn: AdminConnection) -> None:
        await conn.releases.UpdateReleaseVariables(
            mpb.GetReleaseRequest(space=space, project=project, version=version),
            metadata=conn.metadata,
        )

    run_call(ctx, work)
    err_console.print(f"updated the variable snapshot of {project} {version}")


@release.command("delete")
@project_option
@release_option
@space_option
@yes_option
@click.pass_context
def release_delete(ctx: click.Context, project: str, version: str, space: str, yes: bool) -> None:
    """Delete a release and its deployment history (asks first; --yes without a terminal).

    \b
    Example:
      cuttle release delete --project Web --release 1.4.0 --yes
    """
    confirm(f"delete release {version} of {project}", ["its deployment history"], yes=yes)

    async def work(conn: AdminConnection) -> None:
        await conn.releases.DeleteRelease(
            mpb.GetReleaseRequest(space=space, project=project, version=version),
            metadata=conn.metadata,
        )

    run_call(ctx, work)
    err_console.print(f"deleted release {version} of {project}")


@click.group()
def runbook() -> None:
    """Runbooks: operations processes of a project; the published snapshot is what runs."""


@runbook.command("publish")
@project_option
@click.option("--runbook", "name", required=True, help="The runbook.")
@click.option("--snapshot-name", default="", help="Default: Snapshot N.")
@space_option
@click.pass_context
def runbook_publish(
    ctx: click.Context, project: str, name: str, snapshot_name: str, space: str
) -> None:
    """Freeze a runbook (process and the project's variables) and publish it.

    \b
      cuttle runbook publish --project Web --runbook "Restart web"
    """

    async def work(conn: AdminConnection) -> mpb.RunbookSnapshot:
        published: mpb.RunbookSnapshot = await conn.runbooks.PublishRunbook(
            mpb.PublishRunbookRequest(
                space=space, project=project, runbook=name, name=snapshot_name
            ),
            metadata=conn.metadata,
        )
        return published

    published = run_call(ctx, work)
    console.print(f"published {published.name} of runbook {published.runbook}", highlight=False)


@runbook.command("snapshots")
@project_option
@click.option("--runbook", "name", required=True, help="The runbook.")
@space_option
@listing_output
@click.pass_context
def runbook_snapshots(ctx: click.Context, project: str, name: str, space: str, output: str) -> None:
    """A runbook's snapshots, newest first; one is published."""

    async def work(conn: AdminConnection) -> mpb.ListRunbookSnapshotsResponse:
        found: mpb.ListRunbookSnapshotsResponse = await conn.runbooks.ListRunbookSnapshots(
            mpb.ListRunbookSnapshotsRequest(space=space, project=project, runbook=name),
            metadata=conn.metadata,
        )
        return found

    snapshots = run_call(ctx, work).snapshots
    if output != "table":
        print_data(
            [
                {
                    "id": s.id,
                    "name": s.name,
                    "runbook": s.runbook,
                    "published": s.published,
                    "created_at": time_or_none(s.created_unix_ms),
                    "created_by": s.created_by,
                }
                for s in snapshots
            ],
            output,
        )
        return
    table = Table("Snapshot", "Published", "Created", "By")
    for s in snapshots:
        table.add_row(
            s.name, "yes" if s.published else "", format_ms(s.created_unix_ms), s.created_by
        )
    console.print(table)


@runbook.command("run")
@project_option
@click.option("--runbook", "name", required=True, help="The runbook.")
@click.option("--environment", required=True, help="Where to run it (one the runbook allows).")
@click.option("--snapshot", default="", help="A snapshot by name (default: the published one).")
@click.option("--skip-step", "skip_steps", multiple=True, help="A step not to run.")
@click.option("--specific-machine", "specific", multiple=True, help="Run only on this machine.")
@click.option("--exclude-machine", "excluded", multiple=True, help="Leave this machine out.")
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@click.option("--wait", is_flag=True, help="Follow the run until it ends.")
@space_option
@text_output
@click.pass_context
def runbook_run(
    ctx: click.Context,
    project: str,
    name: str,
    environment: str,
    snapshot: str,
    skip_steps: tuple[str, ...],
    specific: tuple[str, ...],
    excluded: tuple[str, ...],
    dry_run: bool,
    wait: bool,
    space: str,
    output: str,
) -> None:
    """Run a runbook: the deployment engine on its published snapshot, no lifecycle.

    \b
      cuttle runbook run --project Web --runbook "Restart web" --environment Production --wait
    """
    request = mpb.RunRunbookRequest(
        space=space,
        project=project,
        runbook=name,
        environment=environment,
        snapshot=snapshot,
        skip_steps=skip_steps,
        specific_machines=specific,
        excluded_machines=excluded,
        dry_run=dry_run,
    )

    async def work(conn: AdminConnection) -> tuple[mpb.DeployResponse, apb.Task | None]:
        response: mpb.DeployResponse = await conn.deployments.RunRunbook(
            request, metadata=conn.metadata, timeout=120
        )
        show_response(response, output, dry_run)
        if dry_run or not wait:
            return response, None
        return response, await follow(conn, response.task_id, output)

    _, final = run_call(ctx, work)
    if final is not None:
        sys.exit(0 if final.state == apb.TASK_STATE_SUCCESS else 1)

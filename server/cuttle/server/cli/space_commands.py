"""`cuttle space ...`: create, list, rename and delete spaces."""

from __future__ import annotations

import click
from rich.table import Table

from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.protocol.v1 import model_pb2_grpc
from cuttle.server.cli.confirm import confirm, yes_option
from cuttle.server.cli.connection import AdminConnection
from cuttle.server.cli.context import console, err_console, format_ms, run_call
from cuttle.server.cli.json_output import listing_output, message_json, print_data


def _stub(conn: AdminConnection) -> model_pb2_grpc.SpaceServiceAsyncStub:
    return model_pb2_grpc.SpaceServiceStub(conn.channel)


@click.group()
def space() -> None:
    """Spaces: separate models (environments, projects, teams...) on one server.

    \b
      cuttle space create Team-B
      cuttle --space Team-B apply -f deploy/
      cuttle space list
    """


@space.command("create")
@click.argument("name")
@click.pass_context
def space_create(ctx: click.Context, name: str) -> None:
    """Create a space with the documents every space starts with."""

    async def work(conn: AdminConnection) -> mpb.Space:
        return await _stub(conn).CreateSpace(
            mpb.CreateSpaceRequest(name=name), metadata=conn.metadata
        )

    created = run_call(ctx, work)
    err_console.print(f"created space {created.name}")


@space.command("list")
@listing_output
@click.pass_context
def space_list(ctx: click.Context, output: str) -> None:
    """Every space.

    \b
    Example:
      cuttle space list --output json
    """

    async def work(conn: AdminConnection) -> mpb.ListSpacesResponse:
        return await _stub(conn).ListSpaces(mpb.ListSpacesRequest(), metadata=conn.metadata)

    spaces = run_call(ctx, work).spaces
    if output != "table":
        # id, name, created_at, is_default
        print_data([message_json(s) for s in spaces], output)
        return
    table = Table("Name", "Default", "Created", "Id")
    for s in spaces:
        table.add_row(s.name, "yes" if s.is_default else "", format_ms(s.created_unix_ms), s.id)
    console.print(table)


@space.command("rename")
@click.argument("name")
@click.argument("new_name")
@click.pass_context
def space_rename(ctx: click.Context, name: str, new_name: str) -> None:
    """Rename a space (the default space keeps its name)."""

    async def work(conn: AdminConnection) -> mpb.Space:
        return await _stub(conn).RenameSpace(
            mpb.RenameSpaceRequest(name=name, new_name=new_name), metadata=conn.metadata
        )

    renamed = run_call(ctx, work)
    err_console.print(f"renamed space {name} to {renamed.name}")


@space.command("delete")
@click.argument("name")
@yes_option
@click.pass_context
def space_delete(ctx: click.Context, name: str, yes: bool) -> None:
    """Delete a space that holds nothing but what it started with.

    Asks first on a terminal; without one, --yes is needed. A space that still holds more is
    refused, with what is left.

    \b
    Example:
      cuttle space delete Team-B --yes
    """
    confirm(
        f"delete space {name}",
        ["its audit trail, Default Lifecycle and Default Project Group"],
        yes=yes,
    )

    async def work(conn: AdminConnection) -> None:
        await _stub(conn).DeleteSpace(mpb.DeleteSpaceRequest(name=name), metadata=conn.metadata)

    run_call(ctx, work)
    err_console.print(f"deleted space {name}")

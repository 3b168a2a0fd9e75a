"""`cuttle node`: the server nodes sharing one database, as an operator checks them."""

from __future__ import annotations

import click
from rich.table import Table

from cuttle.protocol.v1 import admin_pb2 as apb
from cuttle.server.cli.connection import AdminConnection
from cuttle.server.cli.context import console, run_call
from cuttle.server.cli.json_output import listing_output, print_data, time_or_none


@click.group()
def node() -> None:
    """Server nodes: which are alive, how busy, and which one answered."""


@node.command("list")
@listing_output
@click.pass_context
def node_list(ctx: click.Context, output: str) -> None:
    """Each node, its heartbeat age, its task cap and the unfinished tasks it holds.

    \b
    Example:
      cuttle node list --output json
    """

    async def work(conn: AdminConnection) -> apb.ListNodesResponse:
        return await conn.stub.ListNodes(apb.ListNodesRequest(), metadata=conn.metadata, timeout=60)

    found = run_call(ctx, work)
    rows = [
        {
            "id": n.id,
            "this_node": n.this_node,
            "started_at": time_or_none(n.started_unix_ms),
            "heartbeat_at": time_or_none(n.heartbeat_unix_ms),
            "heartbeat_age_seconds": round(
                max(0, found.now_unix_ms - n.heartbeat_unix_ms) / 1000, 1
            ),
            "task_cap": n.task_cap,
            "tasks": n.tasks,
        }
        for n in found.nodes
    ]
    if output != "table":
        print_data(rows, output)
        return
    table = Table("node", "heartbeat", "task cap", "tasks held")
    for row in rows:
        name = f"{row['id']} (this one)" if row["this_node"] else str(row["id"])
        table.add_row(
            name, f"{row['heartbeat_age_seconds']}s ago", str(row["task_cap"]), str(row["tasks"])
        )
    console.print(table)

"""`cuttle dashboard`: projects × environments, the latest deployment in each cell; live."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import click
from rich.live import Live
from rich.table import Table
from rich.text import Text

from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.server.cli.connection import AdminConnection
from cuttle.server.cli.context import console, run_call, space_option
from cuttle.server.cli.json_output import listing_output, print_data, print_json_line, rfc3339

# How each state reads in a table cell; the JSON keeps the plain state.
_STYLE = {
    "success": "green",
    "failed": "red",
    "timed_out": "red",
    "cancelled": "yellow",
    "cancelling": "yellow",
    "running": "cyan",
    "queued": "dim",
    "waiting": "magenta",
}
_WORDS = {"waiting": "waiting for a person", "timed_out": "timed out"}


def age(seconds: float) -> str:
    """A short age: 42s, 5m, 3h, 2d."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def dashboard_json(board: mpb.Dashboard) -> dict[str, object]:
    """The dashboard with plain lower-case states and RFC 3339 times in *_at fields."""
    return {
        "generated_at": rfc3339(board.now_unix_ms),
        "projects": list(board.projects),
        "environments": list(board.environments),
        "cells": [
            {
                "project": c.project,
                "environment": c.environment,
                "tenant": c.tenant or None,
                "release": c.release,
                "state": c.state,
                "has_warnings": c.has_warnings,
                "task_id": c.task_id or None,
                "deployed_at": rfc3339(c.deployed_unix_ms),
                "finished_at": rfc3339(c.finished_unix_ms) if c.finished_unix_ms else None,
                "age_seconds": max(0, (board.now_unix_ms - c.deployed_unix_ms) // 1000),
                "last_success_release": c.last_success_release or None,
                "last_success_at": (
                    rfc3339(c.last_success_unix_ms) if c.last_success_release else None
                ),
            }
            for c in board.cells
        ],
    }


def _cell_text(cell: mpb.DashboardCell, now_ms: int) -> Text:
    text = Text()
    if cell.tenant:
        text.append(f"{cell.tenant}: ", style="bold")
    text.append(cell.release, style="bold")
    state = _WORDS.get(cell.state, cell.state)
    if cell.state == "success" and cell.has_warnings:
        state = "success with warnings"
    style = "yellow" if cell.has_warnings and cell.state == "success" else _STYLE.get(cell.state)
    text.append(f"\n{state}", style=style)
    text.append(f" · {age((now_ms - cell.deployed_unix_ms) / 1000)} ago", style="dim")
    if cell.last_success_release:
        text.append(f"\nlast good {cell.last_success_release}", style="green dim")
    return text


def dashboard_table(board: mpb.Dashboard) -> Table:
    """Projects as rows, environments as columns; an empty cell where nothing was deployed."""
    table = Table("Project", *board.environments, title="Dashboard", show_lines=True)
    by_cell: dict[tuple[str, str], list[mpb.DashboardCell]] = defaultdict(list)
    for cell in board.cells:
        by_cell[cell.project, cell.environment].append(cell)
    for project in board.projects:
        row: list[Text | str] = [project]
        for environment in board.environments:
            found = by_cell.get((project, environment), [])
            joined = Text("\n").join(_cell_text(c, board.now_unix_ms) for c in found)
            row.append(joined if found else Text("-", style="dim"))
        table.add_row(*row)
    return table


async def _fetch(conn: AdminConnection, space: str) -> mpb.Dashboard:
    board: mpb.Dashboard = await conn.dashboard.GetDashboard(
        mpb.GetDashboardRequest(space=space), metadata=conn.metadata, timeout=60
    )
    return board


@click.command("dashboard")
@click.option("--watch", is_flag=True, help="Redraw live until Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between redraws with --watch.",
)
@listing_output
@space_option
@click.pass_context
def dashboard(ctx: click.Context, watch: bool, interval: float, output: str, space: str) -> None:
    """Projects × environments: the latest deployment in each cell, its state and age.

    A cell whose latest deployment is not a success also names the release last deployed there
    with success. With --watch, --output json prints one JSON document per line per redraw,
    and --output yaml one YAML document (after `---`) per redraw.

    \b
      cuttle dashboard
      cuttle dashboard --watch
      cuttle dashboard --output json
    """

    async def once(conn: AdminConnection) -> None:
        board = await _fetch(conn, space)
        if output != "table":
            print_data(dashboard_json(board), output)
        else:
            console.print(dashboard_table(board))

    async def live(conn: AdminConnection) -> None:
        board = await _fetch(conn, space)
        if output != "table":
            while True:
                if output == "json":
                    print_json_line(dashboard_json(board))
                else:
                    click.echo("---")
                    print_data(dashboard_json(board), output)
                await asyncio.sleep(interval)
                board = await _fetch(conn, space)
        with Live(dashboard_table(board), console=console, auto_refresh=False) as screen:
            while True:
                # A refresh interval, not a wait on a condition: the server has no push yet.
                await asyncio.sleep(interval)
                board = await _fetch(conn, space)
                screen.update(dashboard_table(board), refresh=True)

    try:
        run_call(ctx, live if watch else once)
    except KeyboardInterrupt:
        # Ctrl-C is how a watch ends; it is not an error.
        return

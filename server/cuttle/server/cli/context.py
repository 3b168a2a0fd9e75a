"""What every `cuttle` command shares: connecting, running a call, printing."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
import grpc
from rich.console import Console

from cuttle.server.cli.connection import AdminConnection, ServerAddress, describe, parse_server
from cuttle.server.cli.json_output import message_json
from cuttle.server.cli.profiles import ConnectionChoice
from cuttle.server.cli.suggest import suggestion

T = TypeVar("T")
console = Console()
err_console = Console(stderr=True)


def run_call(ctx: click.Context, work: Callable[[AdminConnection], Awaitable[T]]) -> T:
    """Connect, run work on the connection, and turn a failed call into a clean CLI error."""
    choice: ConnectionChoice = ctx.obj["connection"]
    settings = choice.resolve()
    address = parse_server(settings.server, settings.server_thumbprint, settings.api_key)
    space = str(ctx.params.get("space") or (ctx.find_root().obj or {}).get("space", ""))
    return run_at(address, bool(ctx.obj["debug"]), work, space=space)


def run_at(
    address: ServerAddress,
    debug: bool,
    work: Callable[[AdminConnection], Awaitable[T]],
    *,
    space: str = "",
) -> T:
    """Run work on a connection to the given server; a failed call becomes a clean CLI error.

    A name the server could not find gets a "did you mean" when one close to it exists.
    """

    async def go() -> T:
        conn = AdminConnection(address)
        try:
            return await work(conn)
        except grpc.aio.AioRpcError as exc:
            if debug:
                raise
            text = describe(exc)
            hint = await suggestion(conn, exc, space)
            # Keep the error kind ("[not_found]") last, where scripts and people look for it.
            at = text.rfind(" [") if text.endswith("]") else len(text)
            raise click.ClickException(text[:at] + hint + text[at:]) from None
        finally:
            await conn.close()

    return asyncio.run(go())


def format_ms(value: int) -> str:
    """Unix milliseconds as a UTC time for tables."""
    if not value:
        return "-"
    return datetime.fromtimestamp(value / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def to_json(message: Any) -> dict[str, Any]:
    """A protobuf message as JSON data in the CLI's conventions (json_output.message_json)."""
    return message_json(message)


def _space_or_global(ctx: click.Context, param: click.Parameter, value: str) -> str:
    # A command's own --space wins; otherwise `cuttle --space` (or CUTTLE_SPACE) applies.
    return value or str((ctx.find_root().obj or {}).get("space", ""))


space_option = click.option(
    "--space",
    default="",
    callback=_space_or_global,
    help="Space (default: `cuttle --space`, CUTTLE_SPACE, else the default space).",
)

# Kept for commands not yet moved to json_output.listing_output (table|json|yaml), which every
# listing and show should use together with json_output.print_data.
output_option = click.option(
    "--output", type=click.Choice(["table", "json"]), default="table", show_default=True
)


def script_variables(
    variables: tuple[str, ...], sensitive: tuple[str, ...]
) -> list[tuple[str, str, bool]]:
    """(name, value, sensitive) from --variable NAME=VALUE and --sensitive-variable NAME=ENV_VAR.

    A sensitive value is read from the environment variable named, never from the command line.
    """
    found: list[tuple[str, str, bool]] = []
    for item in variables:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.UsageError(f"--variable {item!r}: expected NAME=VALUE")
        found.append((name, value, False))
    for item in sensitive:
        name, sep, env_name = item.partition("=")
        if not sep or env_name not in os.environ:
            raise click.UsageError(
                f"--sensitive-variable {item!r}: expected NAME=ENV_VAR with ENV_VAR set"
            )
        found.append((name, os.environ[env_name], True))
    return found

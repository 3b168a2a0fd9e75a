"""`cuttle login` and `cuttle logout`: save a server, its thumbprint and an API key once."""

from __future__ import annotations

import sys

import click
import grpc

from cuttle.protocol.errors import kind_from_rpc_error
from cuttle.protocol.v1 import admin_pb2 as apb
from cuttle.server.cli.connection import AdminConnection, parse_server
from cuttle.server.cli.context import run_at
from cuttle.server.cli.profiles import (
    DEFAULT_PROFILE,
    ConnectionChoice,
    Profile,
    check_name,
    remove_profile,
    save_profile,
)


def _profile_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    # The command's own --profile wins; otherwise `cuttle --profile` / CUTTLE_PROFILE applies.
    if value:
        return check_name(value)
    choice: ConnectionChoice = ctx.find_root().obj["connection"]
    return choice.profile


profile_option = click.option(
    "--profile",
    callback=_profile_name,
    help=f"Profile name (default: `cuttle --profile`, CUTTLE_PROFILE, else {DEFAULT_PROFILE!r}).",
)


def _read_api_key() -> str:
    """The key from a hidden prompt on a terminal, else the first line of stdin."""
    if sys.stdin.isatty():
        key: str = click.prompt("API key", hide_input=True, err=True)
    else:
        key = sys.stdin.readline()
    key = key.strip()
    if not key:
        raise click.UsageError("no API key given (type it at the prompt or pipe it on stdin)")
    return key


@click.command()
@click.option("--server", help="Admin API address, e.g. https://cuttle:8443 (env CUTTLE_SERVER).")
@click.option(
    "--server-thumbprint",
    help="The server's certificate thumbprint (env CUTTLE_SERVER_THUMBPRINT).",
)
@profile_option
@click.pass_context
def login(
    ctx: click.Context, server: str | None, server_thumbprint: str | None, profile: str
) -> None:
    """Check an API key against a server and save the login as a profile.

    The key is read from a hidden prompt, or from stdin when it is not a terminal (never from
    the command line, where other users could see it). Nothing is saved unless the server
    presents the given thumbprint and accepts the key. Saved in
    $XDG_CONFIG_HOME/cuttle/profiles.json (else ~/.config/cuttle/), readable only by you.

    \b
      cuttle login --server https://cuttle:8443 --server-thumbprint 3F2A...
      cuttle login --profile prod --server https://cuttle.prod:8443 --server-thumbprint 9C... < key
      cuttle --profile prod machine list       # or: CUTTLE_PROFILE=prod cuttle machine list
    """
    given: ConnectionChoice = ctx.find_root().obj["connection"]
    url = server or given.server
    thumbprint = server_thumbprint or given.server_thumbprint
    if not url:
        raise click.UsageError("--server (or CUTTLE_SERVER) is required")
    if not thumbprint:
        raise click.UsageError("--server-thumbprint (or CUTTLE_SERVER_THUMBPRINT) is required")
    key = _read_api_key()
    address = parse_server(url, thumbprint, key)

    async def verify(conn: AdminConnection) -> apb.ServerInfo:
        # GetServerInfo takes any valid key, even a registration-only one: login proves the key
        # authenticates; what it may do is checked by each command.
        try:
            info: apb.ServerInfo = await conn.stub.GetServerInfo(
                apb.GetServerInfoRequest(), metadata=conn.metadata, timeout=30
            )
        except grpc.aio.AioRpcError as exc:
            raise click.ClickException(
                f"{address.target} refused the API key ({kind_from_rpc_error(exc)}: "
                f"{exc.details()}); nothing was saved"
            ) from exc
        return info

    info = run_at(address, bool(ctx.find_root().obj["debug"]), verify)
    path = save_profile(
        profile, Profile(server=url, server_thumbprint=address.thumbprint, api_key=key)
    )
    click.echo(
        f"Logged in to {url} (server {info.version}) as profile {profile!r}; saved in {path}"
    )


@click.command()
@profile_option
def logout(profile: str) -> None:
    """Forget a saved login (the key stays valid on the server: `cuttle api-key revoke` ends it)."""
    if remove_profile(profile):
        click.echo(f"Logged out: profile {profile!r} removed")
    else:
        click.echo(f"no profile {profile!r} to log out of", err=True)

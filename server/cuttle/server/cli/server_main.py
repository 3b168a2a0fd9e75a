"""`cuttle-server`: initialise a server home and run a server node."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import click

from cuttle.protocol import pki
from cuttle.protocol.logconfig import configure_logging
from cuttle.server.app import (
    CERTIFICATE_FILE,
    KEY_FILE,
    ServerNode,
    prepare_model,
)
from cuttle.server.cli.json_output import (
    listing_output,
    print_data,
    print_json_line,
    text_output,
    time_or_none,
)
from cuttle.server.encryption import KEY_FILE as MASTER_KEY_FILE
from cuttle.server.encryption import DecryptionError, Encryptor, KeyFileError, create_key_file
from cuttle.server.engine.builtin_worker import create_user
from cuttle.server.errors import ServerError
from cuttle.server.settings import ServerSettings, load_settings, remember
from cuttle.server.store import api_keys, database, task_queue
from cuttle.server.store import server_identity as identity_store
from cuttle.server.store.records import now_ms

DEFAULT_HOME = "/var/lib/cuttle"
home_option = click.option(
    "--home",
    type=click.Path(path_type=Path, file_okay=False),
    default=lambda: os.environ.get("CUTTLE_HOME", DEFAULT_HOME),
    show_default=DEFAULT_HOME,
    help="The server's data folder (env CUTTLE_HOME).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cuttle-server", prog_name="cuttle-server")
def main() -> None:
    """The Cuttle server.

    \b
      cuttle-server init --home /var/lib/cuttle   # prints the first admin API key once
      cuttle-server run --home /var/lib/cuttle    # admin API :8443, polling :10943
    """


@main.command()
@home_option
@click.option(
    "--database-url",
    help="SQLAlchemy URL, e.g. postgresql+psycopg://... (default: SQLite in the home).",
)
@text_output
def init(home: Path, database_url: str | None, output: str) -> None:
    """Create the data folder, database, server certificate and the first admin API key."""
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    if (home / MASTER_KEY_FILE).exists() or (home / KEY_FILE).exists():
        raise click.ClickException(f"{home} is already initialised (found {MASTER_KEY_FILE})")
    settings = _settings(home).with_overrides(database_url=database_url)
    engine = database.create_engine_for(settings.database_url)
    try:
        database.migrate(engine)
        with database.session_maker(engine)() as session:
            taken = identity_store.stored_thumbprint(session)
        if taken is not None:
            raise click.ClickException(
                f"the database already belongs to a server (thumbprint {taken}): to add a "
                "node to it, run `cuttle-server join --home H --database-url URL "
                "--master-key <first node's master.key>`"
            )
        create_key_file(home)
        if database_url:
            remember(home, database_url=database_url)
        identity = pki.generate_identity("Cuttle Server", pki.SERVER_NAME)
        pki.save_identity(identity, home / KEY_FILE, home / CERTIFICATE_FILE)
        with database.session_maker(engine).begin() as session:
            encryptor = prepare_model(session, home)
            identity_store.store(session, encryptor, identity)
            _record, plaintext = api_keys.create(session, "initial admin", ["admin"])
    finally:
        engine.dispose()
    worker_user = (
        create_user(settings.builtin_worker_user)
        if settings.builtin_worker
        else "built-in worker switched off"
    )
    if output == "json":
        print_json_line({"thumbprint": identity.thumbprint, "api_key": plaintext})
    else:
        click.echo(f"Server initialised in {home}")
        click.echo(f"Thumbprint: {identity.thumbprint}")
        click.echo(f"Admin API key (shown once, keep it safe): {plaintext}")
        click.echo(f"Built-in worker: {worker_user}")


@main.command()
@home_option
@click.option(
    "--database-url",
    required=True,
    help="The first node's database (PostgreSQL to share one server between nodes).",
)
@click.option(
    "--master-key",
    "master_key",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="A copy of the first node's master.key (every node decrypts the same secrets).",
)
@text_output
def join(home: Path, database_url: str, master_key: Path, output: str) -> None:
    """Make a home for another node of an existing server (same database, same identity).

    \b
      cuttle-server join --home /var/lib/cuttle --master-key ./master.key \\
          --database-url postgresql+psycopg://cuttle@db/cuttle
      cuttle-server run --home /var/lib/cuttle
    """
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    if (home / MASTER_KEY_FILE).exists():
        raise click.ClickException(f"{home} already holds a server ({MASTER_KEY_FILE} exists)")
    try:
        encryptor = Encryptor.from_file(master_key)
    except KeyFileError as exc:
        raise click.ClickException(str(exc)) from None
    engine = database.create_engine_for(database_url)
    try:
        if database.current_revision(engine) is None:
            raise click.ClickException(
                "that database holds no Cuttle server: run `cuttle-server init` on the first node"
            )
        database.migrate(engine)
        with database.session_maker(engine)() as session:
            try:
                identity = identity_store.load(session, encryptor)
            except DecryptionError:
                raise click.ClickException(
                    f"{master_key} is not the master key of the server in that database"
                ) from None
        if identity is None:
            raise click.ClickException(
                "that database holds no server identity yet: start the first node once "
                "(`cuttle-server run`) so it moves its identity into the database, then join"
            )
        encryptor.save(home / MASTER_KEY_FILE)
        remember(home, database_url=database_url)
        pki.save_identity(identity, home / KEY_FILE, home / CERTIFICATE_FILE)
    finally:
        engine.dispose()
    if output == "json":
        print_json_line({"thumbprint": identity.thumbprint})
    else:
        click.echo(f"Node home made in {home}; it presents thumbprint {identity.thumbprint}")
        click.echo(f"Start it with: cuttle-server run --home {home}")


@main.command()
@home_option
@click.option("--admin-port", type=click.IntRange(0, 65535), help="Admin API port (0: any).")
@click.option("--polling-port", type=click.IntRange(0, 65535), help="Polling port (0: any).")
@click.option("--listen-host", help="Address to listen on (default 0.0.0.0).")
@click.option("--database-url", help="SQLAlchemy URL (default: SQLite in the home).")
@click.option("--log-level", help="debug, info, warning, error.")
def run(
    home: Path,
    admin_port: int | None,
    polling_port: int | None,
    listen_host: str | None,
    database_url: str | None,
    log_level: str | None,
) -> None:
    """Run a server node until SIGTERM/SIGINT."""
    settings = _settings(home).with_overrides(
        admin_port=admin_port,
        polling_port=polling_port,
        listen_host=listen_host,
        database_url=database_url,
        log_level=log_level,
    )
    configure_logging(settings.log_level)
    if not (home / MASTER_KEY_FILE).exists() and not (home / KEY_FILE).exists():
        raise click.ClickException(
            f"{home} is not initialised: run `cuttle-server init` (or `join` for another node)"
        )

    async def serve() -> None:
        node = ServerNode(home, settings)
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await node.start()
        try:
            await stopping.wait()
        finally:
            await node.stop()

    try:
        asyncio.run(serve())
    except ServerError as exc:
        # Refusals at start (a key file others can read, a missing key): say why, no traceback.
        raise click.ClickException(str(exc)) from None


@main.group()
def node() -> None:
    """The server nodes sharing this home's database."""


@node.command("list")
@home_option
@click.option("--database-url", help="SQLAlchemy URL (default: SQLite in the home).")
@listing_output
def node_list(home: Path, database_url: str | None, output: str) -> None:
    """Each node, its heartbeat age, its task cap and the unfinished tasks it holds."""
    settings = _settings(home).with_overrides(database_url=database_url)
    engine = database.create_engine_for(settings.database_url)
    try:
        with database.session_maker(engine)() as session:
            found = task_queue.nodes(session)
    finally:
        engine.dispose()
    now = now_ms()
    rows = [
        {
            "id": n.id,
            "heartbeat_at": time_or_none(n.heartbeat_ms),
            "heartbeat_age_seconds": round((now - n.heartbeat_ms) / 1000, 1),
            "task_cap": n.task_cap,
            "tasks": n.tasks,
        }
        for n in found
    ]
    if output != "table":
        print_data(rows, output)
        return
    for row in rows:
        click.echo(
            f"{row['id']}  heartbeat {row['heartbeat_age_seconds']}s ago  "
            f"cap {row['task_cap']}  holds {row['tasks']} task(s)"
        )


@main.command("show-thumbprint")
@home_option
@text_output
def show_thumbprint(home: Path, output: str) -> None:
    """Print the server certificate's thumbprint (give it to Tentacles)."""
    try:
        thumbprint = pki.thumbprint_of_pem((home / CERTIFICATE_FILE).read_bytes())
    except OSError as exc:
        raise click.ClickException(f"cannot read the server certificate: {exc}") from exc
    if output == "json":
        print_json_line({"thumbprint": thumbprint})
    else:
        click.echo(thumbprint)


@main.command()
@home_option
@click.option("--database-url", help="SQLAlchemy URL (default: SQLite in the home).")
def migrate(home: Path, database_url: str | None) -> None:
    """Upgrade the database schema to this version."""
    settings = _settings(home).with_overrides(database_url=database_url)
    engine = database.create_engine_for(settings.database_url)
    database.migrate(engine)
    click.echo(f"Database at revision {database.current_revision(engine)}")
    engine.dispose()


def _settings(home: Path) -> ServerSettings:
    try:
        return load_settings(home)
    except ServerError as exc:
        raise click.ClickException(str(exc)) from exc

"""The admin CLI starts quickly: it is a gRPC client and must not load the server's store."""

from __future__ import annotations

import subprocess
import sys


def _modules(probe: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def test_the_admin_cli_does_not_import_the_store() -> None:
    # SQLAlchemy alone costs the CLI about half a second on every invocation. Listing the
    # commands loads every one of them, the model's included.
    probe = (
        "import sys, click, cuttle.server.cli.admin_main as m; "
        "m.main.list_commands(click.Context(m.main)); "
        "print(sorted(n for n in sys.modules if n.split('.')[0] == 'sqlalchemy' "
        "or n.startswith('cuttle.server.store')))"
    )
    assert _modules(probe) == "[]"


def test_task_and_script_commands_do_not_load_the_model_commands() -> None:
    # The model's commands import pydantic documents: a third of the start-up, which
    # `cuttle task log` and `cuttle script run` do not need.
    probe = (
        "import sys, click, cuttle.server.cli.admin_main as m; "
        "ctx = click.Context(m.main); "
        "assert m.main.get_command(ctx, 'task') and m.main.get_command(ctx, 'script'); "
        "print(sorted(n for n in sys.modules if n.split('.')[0] == 'pydantic' "
        "or n.startswith('cuttle.server.cli.model_commands')))"
    )
    assert _modules(probe) == "[]"

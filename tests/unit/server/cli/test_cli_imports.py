"""The admin CLI starts quickly: it is a gRPC client and must not load the server's store."""

from __future__ import annotations

import subprocess
import sys


def test_the_admin_cli_does_not_import_the_store() -> None:
    # SQLAlchemy alone costs the CLI about half a second on every invocation.
    probe = (
        "import sys, cuttle.server.cli.admin_main; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'sqlalchemy' "
        "or m.startswith('cuttle.server.store')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout

"""`--version` on every console script reports the installed distribution's version."""

from __future__ import annotations

import subprocess
from importlib.metadata import version

import pytest

from tests.integration.harness.cluster import BIN

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("command", "distribution"),
    [
        ("cuttle", "cuttle-server"),
        ("cuttle-server", "cuttle-server"),
        ("tentacle", "cuttle-tentacle"),
    ],
)
def test_version_comes_from_the_installed_distribution(command: str, distribution: str) -> None:
    result = subprocess.run(
        [str(BIN / command), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{command}, version {version(distribution)}"

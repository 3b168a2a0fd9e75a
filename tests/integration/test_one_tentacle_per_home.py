"""One Tentacle per home (issue 14, point 4): a second agent on a home is refused at once."""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest

from tests.integration.harness.cluster import Cluster, Tentacle

pytestmark = pytest.mark.integration

# Refusing is a lock attempt, not a wait: well under this even on a loaded machine.
REFUSAL_SECONDS = 15.0


def _second_run(tentacle: Tentacle) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    try:
        result = tentacle.tentacle("run", check=False, timeout=REFUSAL_SECONDS)
    except subprocess.TimeoutExpired:
        # subprocess.run has killed it by now.
        pytest.fail(f"a second `tentacle run` on {tentacle.home} kept running")
    return result, time.monotonic() - started


def _still_runs_scripts(cluster: Cluster, name: str) -> None:
    marker = uuid.uuid4().hex
    result = cluster.server.cli("script", "run", "--machine", name, "--", f"echo alive-{marker}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"alive-{marker}" in result.stdout


@pytest.mark.parametrize("style", ["listening", "polling"])
def test_a_second_run_on_the_same_home_exits_at_once_naming_the_holder(
    cluster: Cluster, style: str
) -> None:
    cluster.start_server()
    first = cluster.add_tentacle("web-01", style)
    assert first.process is not None
    assert first.process.popen is not None
    holder = first.process.popen.pid
    ports_before = (first.home / "ports.json").read_text()

    result, elapsed = _second_run(first)

    assert result.returncode != 0, result.stdout + result.stderr
    assert elapsed < REFUSAL_SECONDS
    assert f"process {holder}" in result.stderr, result.stderr
    assert str(first.home / "tentacle.lock") in result.stderr, result.stderr
    # The refused copy touched nothing the first one published, and the first one still works.
    assert (first.home / "ports.json").read_text() == ports_before
    assert first.process.alive(), first.process.tail()
    _still_runs_scripts(cluster, "web-01")


def test_new_certificate_is_refused_while_the_agent_runs(cluster: Cluster) -> None:
    cluster.start_server()
    tentacle = cluster.add_tentacle("web-01", "listening")
    assert tentacle.process is not None
    assert tentacle.process.popen is not None
    before = tentacle.thumbprint

    refused = tentacle.tentacle("new-certificate", check=False)

    assert refused.returncode != 0
    assert f"process {tentacle.process.popen.pid}" in refused.stderr, refused.stderr
    assert tentacle.thumbprint == before
    _still_runs_scripts(cluster, "web-01")


def test_the_lock_goes_with_a_killed_holder(cluster: Cluster) -> None:
    cluster.start_server()
    tentacle = cluster.add_tentacle("web-01", "listening")
    assert tentacle.process is not None
    tentacle.process.kill()
    # The lock file stays behind with the dead PID in it; the kernel has dropped the lock.
    assert (tentacle.home / "tentacle.lock").exists()

    tentacle.start()

    _still_runs_scripts(cluster, "web-01")

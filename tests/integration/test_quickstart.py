"""scripts/quickstart, the README's first command: the demo runs, and Ctrl-C stops all of it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.harness.cluster import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
SECRET = "not-really-a-secret-123"  # what the demo's python script marks sensitive


def _ours(home: Path) -> list[str]:
    """Command lines of live processes started for this quickstart home."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(home) in cmdline and state != "Z":
            found.append(cmdline)
    return found


def test_the_quickstart_shows_scripts_on_both_tentacles_and_ctrl_c_stops_everything(
    tmp_path: Path,
) -> None:
    home = tmp_path / "quickstart"
    out = tmp_path / "quickstart.out"
    env = {**os.environ, "CUTTLE_QUICKSTART_HOME": str(home)}
    env.pop("CUTTLE_QUICKSTART_EXIT", None)
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "quickstart")],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: proc.poll() is not None or "Press Ctrl-C" in out.read_text(),
            240,
            "the quickstart to finish its demo",
        )
        text = out.read_text()
        assert proc.poll() is None, f"the quickstart stopped early:\n{text}"

        # Both Tentacles (listening web-01, polling web-02) ran the bash and the python script.
        for machine in ("web-01", "web-02"):
            assert f"{machine}: hello from {machine}" in text, text
            assert f"{machine}: step 3" in text, text
            assert re.search(rf"{machine}: python 3\.\d+\.\d+ on {machine}", text), text
            assert re.search(rf"│ {machine} +│ Dev, Test +│ web-server +│ \w+ +│ healthy", text), (
                text
            )
        # Two script runs, the deployment to Dev and the promotion to Test.
        assert len(re.findall(r"Task [0-9a-f]{32} success", text)) == 4, text
        for machine in ("web-01", "web-02"):
            assert f"deploying release 1.0.0 to {machine}" in text, text
            assert f"{machine} is back in the pool" in text, text
            # The package: sent once, extracted and filled in per environment, Deploy.sh run.
            assert re.search(rf"hello-site 1\.0\.0: full \d+ bytes sent to {machine}", text), text
            assert f"hello-site 1.0.0: found in cache on {machine}" in text, text
            assert f"site 1.0.0 installed on {machine}" in text, text
        assert "greeting = Hello" in text, text
        assert "environment = Test" in text, text
        assert "Promoting release 1.0.0" in text, text
        assert "output Checked = yes" in text, text
        assert "created release 1.0.0 of Hello" in text, text
        # The sensitive output variable is masked on screen and in every log.
        assert "token: ******** (masked in every log)" in text, text
        assert SECRET not in text
        for log in home.glob("*/*.log"):
            assert SECRET not in log.read_text(errors="replace"), log

        # Ctrl-C reaches the terminal's whole foreground group: the script and what it started.
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
        assert "Stopped." in out.read_text()
        wait_for(lambda: not _ours(home), 10, "every quickstart process to be gone")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for cmdline in _ours(home):
            pytest.fail(f"left running: {cmdline}")


def _quickstart(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CUTTLE_QUICKSTART_HOME": str(home)}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "quickstart"), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_the_quickstart_never_deletes_a_home_without_being_asked(tmp_path: Path) -> None:
    # An earlier run's home: without a terminal to ask on, only --yes may delete it.
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / ".cuttle-quickstart-home").touch()
    (earlier / "init.json").write_text("{}")
    refused = _quickstart(earlier)
    assert refused.returncode == 1, refused.stderr
    assert "pass --yes" in refused.stderr
    assert (earlier / "init.json").exists()

    # A folder that is not a quickstart home is never deleted, --yes or not.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    refused = _quickstart(mine, "--yes")
    assert refused.returncode == 1, refused.stderr
    assert "is not a quickstart home; it is left alone" in refused.stderr
    assert (mine / "notes.txt").read_text() == "keep me"

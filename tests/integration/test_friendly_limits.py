"""Friendly limits (issue 14, point 7): oversize input and YAML alias bombs get clear refusals.

Everything goes through the real `cuttle` CLI against a real server: a script file or a model
file too large for one gRPC message is refused before anything is sent, naming the file and the
limit; a few hundred bytes of nested YAML aliases are refused at once, naming the file and line,
without the CLI's memory growing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from cuttle.protocol import channel
from tests.integration.harness.cluster import BIN, Server, running_cluster

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
# The CLI may never use more than this, even on a bomb: a safety net for the machine, so that
# a regression fails the test (MemoryError) instead of swapping.
ADDRESS_SPACE_LIMIT = 1024 * MIB
# What a refusal may cost: the interpreter with gRPC and pydantic loaded, and the small file.
MAX_RSS = 200 * MIB
REFUSAL_SECONDS = 20.0

# The classic "billion laughs", nine levels of nine: 365 bytes, 9^9 strings once expanded.
BOMB = """\
environments:
  - &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  - &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  - &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  - &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  - &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  - &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  - &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
  - &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
  - &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the cases of a worker; it must still serve after each."""
    with running_cluster(tmp_path_factory.mktemp("limits")) as cluster:
        yield cluster.start_server()


@dataclass
class Finished:
    """How a CLI run ended, with its peak memory."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    max_rss: int


# Runs the CLI as its child and prints the child's peak RSS. A launcher of its own, because a
# process forked from the test worker starts its life with the worker's high-water mark (the
# kernel carries it across exec), which in a full run is hundreds of MiB that are not the CLI's.
_LAUNCHER = """
import resource, subprocess, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
code = subprocess.run(sys.argv[2:]).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)
sys.exit(code)
"""


def _cli_measured(server: Server, tmp_path: Path, *args: str) -> Finished:
    """Run `cuttle ARGS` bounded in time and address space, and report its peak RSS."""
    out, err = tmp_path / "cli.out", tmp_path / "cli.err"
    started = time.monotonic()
    with out.open("wb") as stdout, err.open("wb") as stderr:
        popen = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _LAUNCHER,
                str(ADDRESS_SPACE_LIMIT),
                str(BIN / "cuttle"),
                *args,
            ],
            stdout=stdout,
            stderr=stderr,
            env=server.cli_env(),
            start_new_session=True,
        )
    try:
        returncode = popen.wait(REFUSAL_SECONDS)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(10)
        pytest.fail(f"cuttle {' '.join(args)} was still running after {REFUSAL_SECONDS}s")
    seconds = time.monotonic() - started
    *messages, peak = err.read_text(errors="replace").rstrip("\n").split("\n")
    return Finished(
        returncode,
        out.read_text(errors="replace"),
        "\n".join(messages),
        seconds,
        int(peak) * 1024,
    )


def _assert_serving(server: Server) -> None:
    assert server.process is not None
    assert server.process.alive(), server.process.tail()
    server.cli("environment", "list", check=True)


def test_an_alias_bomb_is_refused_by_apply_naming_file_and_line(
    server: Server, tmp_path: Path
) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(BOMB)
    assert bomb.stat().st_size < 400

    done = _cli_measured(server, tmp_path, "apply", "-f", str(bomb))

    assert done.returncode == 4, done.stdout + done.stderr
    # The alias that went over the bound is on line 6 (*d): named with the file.
    assert f"{bomb}:6:" in done.stderr, done.stderr
    assert "aliases expand to more than" in done.stderr
    assert done.max_rss < MAX_RSS, f"peak RSS {done.max_rss / MIB:.0f} MiB"
    _assert_serving(server)


def test_an_alias_bomb_is_refused_in_a_spec_file(server: Server, tmp_path: Path) -> None:
    bomb = tmp_path / "spec.yaml"
    # The same bomb as a document's field (a mapping at the top, as `-f` expects).
    bomb.write_text("description: x\nlols:\n" + BOMB.split("\n", 1)[1])

    done = _cli_measured(server, tmp_path, "environment", "create", "Bombed", "-f", str(bomb))

    assert done.returncode != 0, done.stdout + done.stderr
    assert str(bomb) in done.stderr
    assert "line 7" in done.stderr, done.stderr
    assert done.max_rss < MAX_RSS, f"peak RSS {done.max_rss / MIB:.0f} MiB"
    assert "Bombed" not in server.cli("environment", "list", check=True).stdout


def test_a_script_file_larger_than_a_message_is_refused_before_sending(
    server: Server, tmp_path: Path
) -> None:
    big = tmp_path / "big.sh"
    with big.open("w") as handle:
        handle.write("#!/bin/bash\n")
        line = "echo " + "x" * 1018 + "\n"
        for _ in range(50 * MIB // len(line)):
            handle.write(line)

    result = server.cli("script", "run", "--machine", "web-01", "--file", str(big), timeout=60)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"script file {big}" in result.stderr, result.stderr
    assert "16 MiB limit of one message" in result.stderr, result.stderr
    assert "nothing was sent" in result.stderr
    assert "larger than max" not in result.stderr
    assert server.cli_json("task", "list") == []
    _assert_serving(server)


def test_a_model_file_too_large_once_sent_is_refused_naming_it(
    server: Server, tmp_path: Path
) -> None:
    # 9 MiB on disk, under the 16 MiB file limit, but every quote is escaped in the JSON sent:
    # twice as big on the wire, as a file of many small documents grows with their defaults.
    big = tmp_path / "big.yaml"
    big.write_text("environments:\n  - name: Big\n    description: x" + '"' * (9 * MIB) + "\n")
    assert big.stat().st_size < 16 * MIB

    result = server.cli("apply", "-f", str(big), timeout=60)

    assert result.returncode == 1, result.stdout + result.stderr
    assert f"apply of {big}" in result.stderr, result.stderr
    assert f"{channel.MAX_MESSAGE_BYTES // MIB} MiB limit of one message" in result.stderr
    assert "larger than max" not in result.stderr
    assert "Big" not in server.cli("environment", "list", check=True).stdout
    _assert_serving(server)

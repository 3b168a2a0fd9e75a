"""Every benchmark still runs: each one with --quick prints its SUMMARY line and exits 0.

Figures are not checked (the machine is shared and small; the benchmarks are not a gate), only
that each script works end to end and cleans up after itself.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

import psycopg
import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench"
# Each quick run takes 10-20 s here; the limit leaves room for a loaded machine.
RUN_LIMIT = 90


@pytest.mark.timeout(RUN_LIMIT + 20)
@pytest.mark.parametrize(
    "script",
    [
        "bench_control_rpc.py",
        "bench_dashboard.py",
        "bench_deploy_fleet.py",
        "bench_log_throughput.py",
        "bench_noop_scripts.py",
        "bench_polling_fleet.py",
        "bench_task_claims.py",
        "bench_trust_bundle.py",
        "bench_variables.py",
    ],
)
def test_benchmark_runs_quick_and_prints_a_summary(script: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / script), "--quick"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=RUN_LIMIT)
    except subprocess.TimeoutExpired:
        # SIGTERM first: the benchmark's finally blocks stop the processes it started.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            stdout, stderr = proc.communicate(timeout=15)
        finally:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"{script} --quick ran over {RUN_LIMIT}s\n{stdout}\n{stderr}")
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{stdout}\n{stderr}"
    summaries = [line for line in stdout.splitlines() if line.startswith("SUMMARY")]
    assert len(summaries) == 1, f"expected one SUMMARY line from {script}:\n{stdout}"
    assert "ratio" in summaries[0], summaries[0]


@pytest.mark.timeout(200)
def test_store_benchmark_runs_quick_and_cleans_up() -> None:
    # Its own limit: the store benchmark creates rows one transaction at a time on both
    # dialects and takes 30-60 s here under load, more than the others.
    limit = 170
    proc = subprocess.Popen(
        [sys.executable, str(BENCH / "bench_store.py"), "--quick"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        # SIGTERM first: the benchmark unwinds and drops its PostgreSQL schemas.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            stdout, stderr = proc.communicate(timeout=15)
        finally:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"bench_store.py --quick ran over {limit}s\n{stdout}\n{stderr}")
    assert proc.returncode == 0, f"bench_store.py exited {proc.returncode}\n{stdout}\n{stderr}"
    summaries = [line for line in stdout.splitlines() if line.startswith("SUMMARY")]
    assert len(summaries) == 1, f"expected one SUMMARY line:\n{stdout}"
    assert re.match(
        r"SUMMARY store sqlite create x[\d.]+ \(batched x[\d.]+\) list x[\d.]+ "
        r"growth [\d.]+ \(bare [\d.]+\) deep x[\d.]+",
        summaries[0],
    ), summaries[0]
    scratch = re.search(r"SQLite files in (\S+),", stdout)
    assert scratch is not None, stdout
    assert not Path(scratch.group(1)).exists(), "the SQLite scratch directory was left behind"
    schemas = re.findall(r"PostgreSQL schema (bench_[0-9a-f]{32})", stdout)
    if "PostgreSQL is not answering" in stdout:
        assert not schemas, stdout
        return
    assert "; postgresql create x" in summaries[0], summaries[0]
    assert len(schemas) == 4, stdout  # two sizes, one-by-one and batched databases
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", connect_timeout=5) as db:
        left = db.execute(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name = ANY(%s)",
            (schemas,),
        ).fetchall()
    assert left == [], f"schemas left behind: {left}"

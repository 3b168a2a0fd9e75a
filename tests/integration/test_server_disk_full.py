"""The server's disk fills under a flooding script: that task fails with the reason, nothing hangs.

The server's home (database, log) is a small tmpfs mounted inside the test, most of it taken by
a filler file. A script floods output until the database cannot grow. The task must end
`failed` saying "server disk full", its script must be stopped on the agent, the server must
stay up (health, reads) and refuse writes with that reason, and once the filler is gone a new
task must run normally, without a restart. A second test shows the free-space floor refusing
the output before the disk is full at all.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cuttle.protocol import channel, pki
from tests.integration.harness.cluster import BIN, Cluster, Server, wait_for
from tests.integration.harness.tasks import (
    finished_task,
    kill_marked,
    newest_task_id,
    processes_with,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MIB = 1024 * 1024


@contextlib.contextmanager
def _small_tmpfs(path: Path, size_mib: int) -> Iterator[Path]:
    path.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as a full disk needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here to fill: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def _fill(path: Path, leave_mib: int) -> Path:
    """A file taking all but leave_mib of the filesystem's free space."""
    filler = path / "filler"
    stat = os.statvfs(path)
    size = stat.f_bavail * stat.f_frsize - leave_mib * MIB
    with filler.open("wb") as out:
        chunk = b"\0" * MIB
        for _ in range(size // MIB):
            out.write(chunk)
    return filler


def _health(server: Server) -> str:
    """The server's standard gRPC health status, by name."""
    pem = (server.home / "server-certificate.pem").read_bytes()
    credentials = grpc.ssl_channel_credentials(root_certificates=pem)
    target = f"{server.host}:{server.admin_port}"
    options = channel.client_options(pki.SERVER_NAME)
    with grpc.secure_channel(target, credentials, options=options) as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _flood(server: Server, machine: str, mark: str) -> subprocess.Popen[bytes]:
    # 200-byte lines as fast as `yes` writes them, until something stops it.
    body = f"export {mark}\nyes \"$(printf 'x%.0s' $(seq 1 200))\"\n"
    return subprocess.Popen(
        [str(BIN / "cuttle"), "script", "run", "--machine", machine, "--", body],
        env=server.cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def test_a_full_server_disk_fails_the_task_and_the_server_recovers_by_itself(
    cluster: Cluster,
) -> None:
    mark = f"CUTTLE_TEST_MARK={uuid.uuid4().hex}"
    with _small_tmpfs(cluster.root / "server", 64):
        # No floor: this is the disk really filling, SQLite's own "database or disk is full".
        server = cluster.start_server(data_dir_min_free_bytes=0)
        cluster.add_tentacle("flood-01", "listening")
        filler = _fill(server.home, leave_mib=12)
        run = _flood(server, "flood-01", mark)
        try:
            task_id = wait_for(lambda: newest_task_id(server), 30, "the task to be listed")
            task = wait_for(lambda: finished_task(server, task_id), 120, "the task to finish")
            out, _ = run.communicate(timeout=60)
            assert run.returncode != 0, out.decode(errors="replace")
            assert task["state"] == "failed", task
            assert task["reason"].startswith("server disk full: "), task
            (target,) = task["targets"]
            # Its script was stopped on the agent, not left printing for nobody.
            assert target["state"] == "cancelled", target
            assert "server disk full" in target["message"], target
            wait_for(lambda: not processes_with(mark.encode()), 30, "the flood to be killed")

            # Still up: health and reads answer. (A write that fails says "server disk full";
            # whether a small one fails here depends on the room SQLite freed by rolling back,
            # so that mapping is a unit test: test_api_error_kinds.)
            assert _health(server) == "SERVING"
            listed = server.cli_json("task", "list")
            assert listed[0]["id"] == task_id

            # Space comes back: the next task runs normally, with no restart in between.
            filler.unlink()
            again = server.cli("script", "run", "--machine", "flood-01", "--", "echo ok")
            assert again.returncode == 0, again.stdout + again.stderr
            assert "ok" in again.stdout
            assert server.process is not None
            assert server.process.alive()
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
            kill_marked(mark.encode())
            cluster.stop()
            # The log lives on the tmpfs: shown (on failure) before the mount goes.
            print(cluster.logs())


def test_below_the_free_space_floor_output_is_refused_before_the_disk_fills(
    cluster: Cluster,
) -> None:
    mark = f"CUTTLE_TEST_MARK={uuid.uuid4().hex}"
    with _small_tmpfs(cluster.root / "server", 64):
        server = cluster.start_server(data_dir_min_free_bytes="24MiB")
        cluster.add_tentacle("flood-01", "polling")
        _fill(server.home, leave_mib=32)
        run = _flood(server, "flood-01", mark)
        try:
            task_id = wait_for(lambda: newest_task_id(server), 30, "the task to be listed")
            task = wait_for(lambda: finished_task(server, task_id), 120, "the task to finish")
            run.communicate(timeout=60)
            assert task["state"] == "failed", task
            assert "server disk full" in task["reason"], task
            assert "below the floor of 24.0 MiB" in task["reason"], task
            wait_for(lambda: not processes_with(mark.encode()), 30, "the flood to be killed")
            # The floor kept room: the disk itself never filled.
            stat = os.statvfs(server.home)
            assert stat.f_bavail * stat.f_frsize > 16 * MIB
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
            kill_marked(mark.encode())
            cluster.stop()
            # The log lives on the tmpfs: shown (on failure) before the mount goes.
            print(cluster.logs())

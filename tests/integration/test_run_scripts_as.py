"""run_scripts_as: scripts run as an unprivileged user, kept in their cgroup and out of the home.

Real `cuttle-server` and `tentacle` processes; the Tentacle runs as root (as the installed
service does) and a throwaway system user is made for each test. The Tentacle's home is in
pytest's temp root, a 0700 tree the user cannot enter (as a server's built-in worker's home
is): the workspaces live outside it, under /var/lib/cuttle-tentacle-workspaces.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cuttle.tentacle.execution import proctree
from cuttle.tentacle.execution.script_user import workspaces_root
from tests.integration.harness.cluster import BIN, Cluster, Tentacle, wait_for
from tests.integration.harness.tasks import (
    finished_task,
    kill_marked,
    log_lines,
    newest_task_id,
    processes_with,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture
def script_user() -> Iterator[str]:
    """A system user without a home, deleted after the test."""
    if os.geteuid() != 0:
        pytest.skip("run_scripts_as needs a root Tentacle (and root to make a user)")
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("useradd/userdel are not installed (Debian package passwd)")
    name = f"cuttle-t{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", name],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=60, check=False)


def _run_as(tentacle: Tentacle, user: str) -> None:
    """Restart the Tentacle with run_scripts_as set (it applies at start)."""
    assert tentacle.process is not None
    tentacle.process.stop()
    tentacle.tentacle("configure", "--run-scripts-as", user)
    tentacle.start()


def _uid(user: str) -> int:
    out = subprocess.run(["id", "-u", user], capture_output=True, text=True, check=True)
    return int(out.stdout)


def _writable_cgroup2() -> Path:
    """The cgroup2 mount when this process may make cgroups under its own; else skip."""
    mount = proctree.find_cgroup2_mount()
    if mount is None:
        pytest.skip("no cgroup v2 mount here: nothing keeps a script in its cgroup")
    own = "/"
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            own = line[3:]
    probe = mount / own.lstrip("/") / f"cuttle-probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        pytest.skip(f"cgroup v2 at {mount} is not writable here ({exc})")
    return mount


def test_a_script_runs_as_the_user_and_cannot_read_the_tentacle_home(
    cluster: Cluster, script_user: str, tmp_path: Path
) -> None:
    server = cluster.start_server()
    tentacle = cluster.add_tentacle("web-01", "listening")
    _run_as(tentacle, script_user)
    home = tentacle.home
    assert home.stat().st_mode & 0o777 == 0o700
    body = (
        "id -u\n"
        'echo "user=$USER logname=$LOGNAME"\n'
        f"cat {home}/key.pem >/dev/null 2>&1 && echo KEY-READ || echo key-refused\n"
        f'cat "{home}/tickets/$CUTTLE_TICKET/journal" >/dev/null 2>&1 '
        "&& echo JOURNAL-READ || echo journal-refused\n"
        f"ls {home}/tickets >/dev/null 2>&1 && echo TICKETS-LISTED || echo tickets-refused\n"
        f'ls "$(dirname "$(dirname "$PWD")")" >/dev/null 2>&1 '
        "&& echo WORKSPACES-LISTED || echo workspaces-refused\n"
        "echo written > out.txt && cat out.txt\n"
        "echo report > report.txt && new_octopusartifact report.txt\n"
        'test -r "$CUTTLE_VARIABLES_FILE" && echo variables-readable\n'
        'set_octopusvariable Color "blue"\n'
    )
    run = server.cli("script", "run", "--machine", "web-01", "--", body)
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert f"web-01: {_uid(script_user)}" in out, out
    assert f"web-01: user={script_user} logname={script_user}" in out, out
    for refused in ("key", "journal", "tickets", "workspaces"):
        assert f"web-01: {refused}-refused" in out, out
    assert "web-01: written" in out, out
    assert "web-01: variables-readable" in out, out

    task = server.cli_json("task", "show", newest_task_id(server) or "")
    (target,) = task["targets"]
    outputs = {v["name"]: v["value"] for v in target["output_variables"]}
    assert outputs["Color"] == "blue"
    (artifact,) = target["artifacts"]
    assert artifact["name"] == "report.txt"
    saved = tmp_path / "report.txt"
    server.cli(
        "artifact", "download", task["id"], "web-01", "report.txt", "-o", str(saved), check=True
    )
    assert saved.read_text() == "report\n"
    workspaces = workspaces_root(home, "")
    assert workspaces.stat().st_mode & 0o777 == 0o711
    assert workspaces.parent.stat().st_mode & 0o777 == 0o711
    # Once the server has the result, the ticket goes, and its workspace outside the home too.
    wait_for(
        lambda: sorted(p.name for p in workspaces.iterdir()) == ["helpers"],
        30,
        "the completed ticket's workspace to be deleted",
    )

    # Root's files are not the script's to publish: root copying them in would leak them.
    publish = "new_octopusartifact /etc/shadow"
    leak = server.cli("script", "run", "--machine", "web-01", "--", publish)
    assert leak.returncode == 0, leak.stdout + leak.stderr
    assert "is outside the workspace" in leak.stdout
    task = server.cli_json("task", "show", newest_task_id(server) or "")
    assert task["targets"][0]["artifacts"] == []


def test_a_script_run_as_the_user_cannot_leave_its_cgroup_and_cancel_kills_its_tree(
    cluster: Cluster, script_user: str
) -> None:
    mount = _writable_cgroup2()
    server = cluster.start_server()
    tentacle = cluster.add_tentacle("web-01", "polling")
    _run_as(tentacle, script_user)
    mark = f"CUTTLE_TEST_MARK={uuid.uuid4().hex}"
    body = (
        f"export {mark}\n"
        f"echo $$ > {mount}/cgroup.procs 2>/dev/null && echo ROOT-LEFT || echo root-refused\n"
        "own=$(sed -n 's/^0:://p' /proc/self/cgroup)\n"
        f'echo $$ > "{mount}$(dirname "$own")/cgroup.procs" 2>/dev/null '
        "&& echo PARENT-LEFT || echo parent-refused\n"
        # The escape that works for a root script: a new session, no ticket marker in the
        # environment, and a write to the root cgroup. Only the cgroup can find it now.
        f"setsid env -i {mark} sh -c "
        f"'echo $$ > {mount}/cgroup.procs 2>/dev/null; echo escapee-up; sleep 300' &\n"
        "sleep 300 &\n"
        "echo started\n"
        "wait\n"
    )
    run = subprocess.Popen(
        [str(BIN / "cuttle"), "script", "run", "--machine", "web-01", "--", body],
        env=server.cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        task_id = wait_for(lambda: newest_task_id(server), 30, "the task to be listed")
        wait_for(
            lambda: {"started", "escapee-up"} <= set(log_lines(server, task_id)),
            30,
            "the script and its escapee to have started",
        )
        lines = log_lines(server, task_id)
        assert "root-refused" in lines, lines
        assert "parent-refused" in lines, lines
        marked = processes_with(mark.encode())
        assert len(marked) >= 3, marked
        ticket_cgroups = set()
        for pid, _ in marked:
            owner = os.stat(f"/proc/{pid}").st_uid
            assert owner == _uid(script_user), (pid, owner)
            cgroup = Path(f"/proc/{pid}/cgroup").read_text()
            (line,) = [ln for ln in cgroup.splitlines() if ln.startswith("0::")]
            ticket_cgroups.add(line[3:])
        # Every process, the escapee included, is still in the one ticket cgroup.
        assert len(ticket_cgroups) == 1, ticket_cgroups
        assert "/cuttle-" in ticket_cgroups.pop()

        cancel = server.cli("task", "cancel", task_id)
        assert cancel.returncode == 0, cancel.stdout + cancel.stderr
        task = wait_for(lambda: finished_task(server, task_id), 60, "the task to end")
        assert task["state"] == "cancelled", task
        assert processes_with(mark.encode()) == []
        run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        if run.stdout is not None:
            run.stdout.close()  # a failed test must not leak the pipe into the next one
        kill_marked(mark.encode())


def test_an_unknown_user_is_refused_by_configure_and_at_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    tentacle = [str(BIN / "tentacle")]
    subprocess.run([*tentacle, "create-instance", "--home", str(home)], check=True, timeout=60)
    nobody = f"no-such-user-{uuid.uuid4().hex[:6]}"
    configured = subprocess.run(
        [*tentacle, "configure", "--home", str(home), "--run-scripts-as", nobody],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert configured.returncode != 0
    assert f"there is no user {nobody!r}" in configured.stderr
    assert "Traceback" not in configured.stderr

    # Written by hand (or by a passwd change since): `tentacle run` refuses to start.
    config = json.loads((home / "tentacle.json").read_text())
    config["run_scripts_as"] = nobody
    (home / "tentacle.json").write_text(json.dumps(config))
    started = subprocess.run(
        [*tentacle, "run", "--home", str(home)], capture_output=True, text=True, timeout=60
    )
    assert started.returncode != 0
    assert f"there is no user {nobody!r}" in started.stderr
    assert "Traceback" not in started.stderr


def test_run_scripts_as_is_set_by_create_instance_and_cleared_by_configure(
    tmp_path: Path, script_user: str
) -> None:
    home = tmp_path / "home"
    tentacle = [str(BIN / "tentacle")]
    subprocess.run(
        [*tentacle, "create-instance", "--home", str(home), "--run-scripts-as", script_user],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert json.loads((home / "tentacle.json").read_text())["run_scripts_as"] == script_user
    # pytest's temp root is 0700: workspaces in there would be out of the user's reach.
    unreachable = subprocess.run(
        [*tentacle, "configure", "--home", str(home), "--workspaces-dir", str(tmp_path / "ws")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unreachable.returncode == 0, unreachable.stderr
    assert f"warning: run_scripts_as: user {script_user} cannot reach" in unreachable.stderr
    blocked = subprocess.run(
        [*tentacle, "run", "--home", str(home)], capture_output=True, text=True, timeout=60
    )
    assert blocked.returncode != 0
    assert f"user {script_user} cannot reach" in blocked.stderr
    assert "--workspaces-dir" in blocked.stderr
    subprocess.run(
        [*tentacle, "configure", "--home", str(home), "--run-scripts-as", ""],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert json.loads((home / "tentacle.json").read_text())["run_scripts_as"] == ""


def test_the_rootless_service_unit_names_its_user_and_passes_systemd_analyze(
    tmp_path: Path, script_user: str
) -> None:
    units = tmp_path / "units"
    subprocess.run(
        [str(BIN / "tentacle"), "service", "install", "--home", str(tmp_path / "home")]
        + ["--unit-dir", str(units), "--user", script_user],
        check=True,
        capture_output=True,
        timeout=60,
    )
    unit = (units / "cuttle-tentacle.service").read_text()
    assert f"User={script_user}\n" in unit
    assert "Delegate=yes\n" in unit
    assert "NoNewPrivileges=yes\n" in unit
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # the unit's text is checked; systemd's own check needs the systemd package
    checked = subprocess.run(
        [analyze, "verify", str(units / "cuttle-tentacle.service")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


PACKAGE_MODEL = """
environments:
  - name: Dev
lifecycles:
  - name: Only Dev
    phases:
      - name: Development
        optional_environments: [Dev]
projects:
  - name: Web
    lifecycle: Only Dev
    process:
      steps:
        - name: Deploy web
          target_tags: [web]
          actions:
            - name: Deploy web
              type: deploy_package
              package:
                package_id: web
              properties:
                Octopus.Action.SubstituteInFiles.TargetFiles: app.conf
"""


def test_a_package_is_extracted_for_the_user_and_its_scripts_run_as_them(
    cluster: Cluster, script_user: str, tmp_path: Path
) -> None:
    server = cluster.start_server()
    tentacle = cluster.add_tentacle("web-01", "listening")
    _run_as(tentacle, script_user)
    applications = workspaces_root(tentacle.home, "").with_name(
        workspaces_root(tentacle.home, "").name + "-applications"
    )
    try:
        package = tmp_path / "web.1.0.0.tar.gz"
        with tarfile.open(package, "w:gz") as tar:
            for name, data in (
                ("Deploy.sh", b'echo "uid $(id -u) in $PWD"; echo ok > written-by-deploy\n'),
                ("app.conf", b"machine=#{Octopus.Machine.Name}\n"),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        model = tmp_path / "model.yaml"
        model.write_text(PACKAGE_MODEL)
        server.cli("apply", "-f", str(model), check=True)
        server.cli("package", "push", str(package), check=True)
        server.cli("release", "create", "--project", "Web", "--version", "1.0.0", check=True)
        run = server.cli(
            "deploy",
            "--project",
            "Web",
            "--release",
            "1.0.0",
            "--environment",
            "Dev",
            "--wait",
            "--wait-timeout",
            "90",
            timeout=120,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        folder = applications / "Dev" / "web" / "1.0.0"
        uid = _uid(script_user)
        assert f"uid {uid} in {folder}" in run.stdout, run.stdout
        # Out of the 0700 home, owned by the user: their scripts write there.
        assert not folder.is_relative_to(tentacle.home)
        assert (folder / "written-by-deploy").stat().st_uid == uid
        assert (folder / "app.conf").stat().st_uid == uid
        assert (folder / "app.conf").read_text() == "machine=web-01\n"
    finally:
        shutil.rmtree(applications, ignore_errors=True)

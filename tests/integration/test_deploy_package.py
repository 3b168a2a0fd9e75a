"""Deploy a package end to end: push, release, deploy to three real Tentacles (issue 16).

Listening and polling machines; files extracted at Octopus's path, substitution and structured
configuration variables per environment, Deploy.sh run with the deployment's variables (secrets
masked), its output variable read by the next step; a redeploy finds the package in the cache;
the next version goes as a delta and lands byte-identical; archive attacks (path traversal, an
absolute path, a symlink and a hard link leading out, a zip bomb) are refused naming what was
wrong, nothing is written outside and the Tentacles stay healthy; a full disk fails the
acquisition; a release made before releases recorded packages is refused with the reason; a
runbook snapshot deploys the version it recorded.
"""

from __future__ import annotations

import io
import json
import random
import sqlite3
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.harness.cluster import Cluster, Server
from tests.integration.harness.tasks import log_lines

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MODEL = """
environments:
  - name: Dev
  - name: Test
lifecycles:
  - name: Dev or Test
    phases:
      - name: Any
        optional_environments: [Dev, Test]
projects:
  - name: Web
    lifecycle: Dev or Test
    channels:
      - name: Default
        is_default: true
    variables:
      - name: Greeting
        value: hello-dev
        scope:
          environments: [Dev]
      - name: Greeting
        value: hello-test
        scope:
          environments: [Test]
      - name: Logging:LogLevel:Default
        value: Debug
        scope:
          environments: [Dev]
      - name: Logging:LogLevel:Default
        value: Warning
        scope:
          environments: [Test]
      - name: Database:Port
        value: "6543"
      - name: DbPassword
        value: s3cret-pw-42
        sensitive: true
    process:
      steps:
        - name: Deploy web
          target_tags: [web-server]
          actions:
            - name: Deploy web
              type: deploy_package
              package:
                package_id: web
              properties:
                Octopus.Action.SubstituteInFiles.TargetFiles: "conf/*.conf"
                Octopus.Action.Package.JsonConfigurationVariablesTargets: |
                  appsettings.json
                  config.yaml
        - name: Check
          target_tags: [web-server]
          actions:
            - name: Check
              type: run_script
              script:
                body: |
                  dir="#{Octopus.Action[Deploy web].Output.Package.InstallationDirectoryPath}"
                  echo "installed on #{Octopus.Machine.Name} at $dir"
                  cat "$dir/conf/app.conf"
"""

DEPLOY_SH = """echo "deploying $(get_octopusvariable Octopus.Action.Package.PackageVersion) \
greeting=$(get_octopusvariable Greeting) on $(get_octopusvariable Octopus.Machine.Name)"
echo "password is $(get_octopusvariable DbPassword)"
echo "cwd $(pwd)"
"""


def make_package(path: Path, version: str, changed: int | None = None) -> dict[str, bytes]:
    """web.<version>.zip: scripts, config files, and 100 files of 64 KiB of random bytes
    (file `changed` differs from the first version's); returns the files it holds.

    Entries carry the time they were written, as a CI build's do: every entry header differs
    between versions, which costs the delta about one block per entry.
    """
    rng = random.Random(7)  # noqa: S311 - test data, not secrets
    files: dict[str, bytes] = {
        "Deploy.sh": DEPLOY_SH.encode(),
        "PreDeploy.sh": b'echo "pre-deploy in $(basename "$(pwd)")"\n',
        "conf/app.conf": b"greeting=#{Greeting}\npassword=#{DbPassword}\nversion=#{Octopus.Action"
        b".Package.PackageVersion}\n",
        "appsettings.json": json.dumps(
            {"Logging": {"LogLevel": {"Default": "Information"}}, "Database": {"Port": 5432}},
            indent=2,
        ).encode(),
        "config.yaml": b"# kept comment\nLogging:\n  LogLevel:\n    Default: Information\n",
    }
    for number in range(100):
        data = rng.randbytes(65536)
        if number == changed:
            data = random.Random(version).randbytes(65536)  # noqa: S311
        files[f"data/blob-{number:03}.bin"] = data
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return files


def deploy(server: Server, release: str, environment: str, *extra: str) -> tuple[int, str, str]:
    """`cuttle deploy --wait`; returns the exit code, the task id and all output."""
    run = server.cli(
        "deploy",
        "--project",
        "Web",
        "--release",
        release,
        "--environment",
        environment,
        "--wait",
        "--wait-timeout",
        "150",
        *extra,
        timeout=200,
    )
    task_id = next(
        (
            line.split("task ", 1)[1].split(" ", 1)[0]
            for line in run.stderr.splitlines()
            if line.startswith("Deploying: task ")
        ),
        "",
    )
    return run.returncode, task_id, run.stdout + run.stderr


def server_lines(server: Server, task_id: str) -> list[str]:
    out = server.cli("task", "log", task_id, check=True, timeout=30).stdout
    return out.splitlines()


@pytest.fixture
def fleet(cluster: Cluster, tmp_path: Path) -> tuple[Server, dict[str, Path]]:
    server = cluster.start_server()
    homes: dict[str, Path] = {}
    for name, style in (("web-01", "listening"), ("web-02", "polling"), ("web-03", "listening")):
        tentacle = cluster.add_tentacle(
            name, style, environments=("Dev", "Test"), roles=("web-server",)
        )
        homes[name] = tentacle.home
    model = tmp_path / "model.yaml"
    model.write_text(MODEL)
    server.cli("apply", "-f", str(model), check=True)
    return server, homes


def test_push_release_deploy_redeploy_and_delta(
    fleet: tuple[Server, dict[str, Path]], tmp_path: Path
) -> None:
    server, homes = fleet
    first = make_package(tmp_path / "web.1.4.0.zip", "1.4.0")
    server.cli("package", "push", str(tmp_path / "web.1.4.0.zip"), check=True)
    server.cli("release", "create", "--project", "Web", "--version", "1.4.0", check=True)

    code, task_id, output = deploy(server, "1.4.0", "Dev")
    assert code == 0, output
    lines = log_lines(server, task_id)
    text = "\n".join(server_lines(server, task_id))
    for machine, home in homes.items():
        folder = home / "Applications" / "Dev" / "web" / "1.4.0"
        conf = (folder / "conf" / "app.conf").read_text()
        assert conf == "greeting=hello-dev\npassword=s3cret-pw-42\nversion=1.4.0\n"
        settings = json.loads((folder / "appsettings.json").read_text())
        assert settings == {
            "Logging": {"LogLevel": {"Default": "Debug"}},
            "Database": {"Port": 6543},
        }
        config_yaml = (folder / "config.yaml").read_text()
        assert config_yaml.startswith("# kept comment\n")
        assert yaml.safe_load(config_yaml) == {"Logging": {"LogLevel": {"Default": "Debug"}}}
        assert (folder / "data" / "blob-050.bin").read_bytes() == first["data/blob-050.bin"]
        assert f"deploying 1.4.0 greeting=hello-dev on {machine}" in lines
        assert f"installed on {machine} at {folder}" in lines
        assert f"cwd {folder}" in lines
        # Sent in full the first time, once per machine.
        size = (tmp_path / "web.1.4.0.zip").stat().st_size
        assert f"web 1.4.0: full {size} bytes sent to {machine}" in text
    # PreDeploy before Deploy; the secret never reaches the log, in the script's echo or a file.
    assert lines.index("pre-deploy in 1.4.0") < lines.index(
        "deploying 1.4.0 greeting=hello-dev on web-01"
    )
    assert "password is ********" in lines
    assert "s3cret-pw-42" not in text
    assert "Acquire packages" in output or "Acquire packages" in text

    # Test: the same bytes are in every cache already; the files get Test's values.
    code, task_id, output = deploy(server, "1.4.0", "Test")
    assert code == 0, output
    text = "\n".join(server_lines(server, task_id))
    for machine, home in homes.items():
        assert f"web 1.4.0: found in cache on {machine}" in text
        conf = (home / "Applications" / "Test" / "web" / "1.4.0" / "conf" / "app.conf").read_text()
        assert conf.startswith("greeting=hello-test\n")
    # Redeploying the same version gets a fresh folder.
    code, task_id, output = deploy(server, "1.4.0", "Test")
    assert code == 0, output
    assert (homes["web-02"] / "Applications" / "Test" / "web" / "1.4.0_1").is_dir()

    # 1.4.1 changes 1 % of the files: a delta, much smaller than the package, byte-identical
    # (most of it is the one block per entry that the new timestamps in the headers cost).
    second = make_package(tmp_path / "web.1.4.1.zip", "1.4.1", changed=17)
    server.cli("package", "push", str(tmp_path / "web.1.4.1.zip"), check=True)
    server.cli("release", "create", "--project", "Web", "--version", "1.4.1", check=True)
    code, task_id, output = deploy(server, "1.4.1", "Dev")
    assert code == 0, output
    text = "\n".join(server_lines(server, task_id))
    size = (tmp_path / "web.1.4.1.zip").stat().st_size
    for machine, home in homes.items():
        summary = next(
            line for line in text.splitlines() if f"sent to {machine}" in line and "1.4.1" in line
        )
        assert "delta of " in summary, summary
        sent = int(summary.split("delta of ", 1)[1].split(" ", 1)[0])
        assert sent < size // 5, summary
        folder = home / "Applications" / "Dev" / "web" / "1.4.1"
        for name in ("data/blob-017.bin", "data/blob-018.bin", "Deploy.sh"):
            assert (folder / name).read_bytes() == second[name]
        assert (folder / "data/blob-017.bin").read_bytes() != first["data/blob-017.bin"]


def _zip_with(name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("Deploy.sh", "echo should never run\n")
        archive.writestr(name, "escaped")
    return buffer.getvalue()


def _tar_with(member: tarfile.TarInfo) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        deploy = b"echo should never run\n"
        info = tarfile.TarInfo("Deploy.sh")
        info.size = len(deploy)
        tar.addfile(info, io.BytesIO(deploy))
        data = b"escaped" if member.isfile() else b""
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data) if data else None)
    return buffer.getvalue()


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _bomb() -> bytes:
    """250 MiB of zeros in a zip of about 250 KB: past the 200:1 ratio once 100 MiB is out."""
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("zeros.bin", "w", force_zip64=True) as entry,
    ):
        chunk = bytes(1024 * 1024)
        for _ in range(250):
            entry.write(chunk)
    return buffer.getvalue()


ATTACKS: list[tuple[str, str, bytes | None, str]] = [
    # (version, format, archive (None: made in the test), what the refusal says)
    ("6.6.1", "zip", _zip_with("../../../../outside.txt"), "'../../../../outside.txt' escapes"),
    ("6.6.2", "tar.gz", _tar_with(tarfile.TarInfo("/tmp/cuttle-abs-escape.txt")), "absolute path"),
    (
        "6.6.3",
        "tar.gz",
        _tar_with(_link("up", "../../../../outside", tarfile.SYMTYPE)),
        "link 'up' -> '../../../../outside' points outside",
    ),
    (
        "6.6.4",
        "tar.gz",
        _tar_with(_link("passwd", "../../../../etc/passwd", tarfile.LNKTYPE)),
        "escapes the target",
    ),
    ("6.6.5", "zip", None, "more than 200 times"),
]


def test_archive_attacks_fail_the_action_and_the_tentacle_stays_healthy(
    fleet: tuple[Server, dict[str, Path]], tmp_path: Path
) -> None:
    server, homes = fleet
    for version, kind, archive, refusal in ATTACKS:
        path = tmp_path / f"web.{version}.{kind}"
        path.write_bytes(archive if archive is not None else _bomb())
        server.cli("package", "push", str(path), check=True)
        server.cli("release", "create", "--project", "Web", "--version", version, check=True)
        code, task_id, output = deploy(server, version, "Dev")
        assert code != 0, output
        lines = "\n".join(server_lines(server, task_id))
        assert lines.count(refusal) >= len(homes), lines
        assert "should never run" not in lines
        for home in homes.values():
            assert not (home / "Applications" / "Dev" / "web" / version).exists()
            # Nothing of a refused archive is left, not even its staging folder.
            left = [p.name for p in (home / "Applications" / "Dev" / "web").glob(f".{version}*")]
            assert left == [], left
        # The Tentacles' homes share one folder of this test: nothing landed anywhere in it.
        for root in {home.parent for home in homes.values()} | {tmp_path}:
            assert not list(root.rglob("outside*")), root
        assert not Path("/tmp/cuttle-abs-escape.txt").exists()
    # Still healthy: a script runs on every machine.
    machines = [arg for name in homes for arg in ("--machine", name)]
    result = server.cli("script", "run", *machines, "--", "echo alive")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_release_made_before_releases_recorded_packages_is_refused(
    fleet: tuple[Server, dict[str, Path]], tmp_path: Path
) -> None:
    server, _ = fleet
    make_package(tmp_path / "web.1.0.0.zip", "1.0.0")
    server.cli("package", "push", str(tmp_path / "web.1.0.0.zip"), check=True)
    server.cli("release", "create", "--project", "Web", "--version", "1.0.0", check=True)
    # What a release created by an earlier Cuttle looks like: no `packages` in its snapshot.
    database = sqlite3.connect(server.home / "cuttle.db")
    with database:
        row = database.execute("SELECT id, snapshot FROM releases").fetchone()
        snapshot: dict[str, Any] = json.loads(row[1])
        del snapshot["packages"]
        database.execute(
            "UPDATE releases SET snapshot = ? WHERE id = ?", (json.dumps(snapshot), row[0])
        )
    database.close()
    code, _, output = deploy(server, "1.0.0", "Dev")
    assert code != 0
    assert "created before Cuttle recorded package versions" in output
    assert "create a new release" in output


RUNBOOK = """
projects:
  - name: Ops
    lifecycle: Dev or Test
    runbooks:
      - name: Refresh web
        process:
          steps:
            - name: Refresh
              target_tags: [web-server]
              actions:
                - name: Refresh
                  type: deploy_package
                  package:
                    package_id: web
"""


def test_a_runbook_snapshot_records_its_package_and_deploys_those_bytes(
    fleet: tuple[Server, dict[str, Path]], tmp_path: Path
) -> None:
    server, homes = fleet
    model = tmp_path / "runbook.yaml"
    model.write_text(RUNBOOK)
    server.cli("apply", "-f", str(model), check=True)
    make_package(tmp_path / "web.2.0.0.zip", "2.0.0")
    server.cli("package", "push", str(tmp_path / "web.2.0.0.zip"), check=True)
    server.cli("runbook", "publish", "--project", "Ops", "--runbook", "Refresh web", check=True)
    # A newer version pushed after publishing is not what the snapshot deploys.
    make_package(tmp_path / "web.2.0.1.zip", "2.0.1", changed=3)
    server.cli("package", "push", str(tmp_path / "web.2.0.1.zip"), check=True)
    ran = server.cli(
        "runbook",
        "run",
        "--project",
        "Ops",
        "--runbook",
        "Refresh web",
        "--environment",
        "Test",
        "--wait",
        timeout=200,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    for home in homes.values():
        assert (home / "Applications" / "Test" / "web" / "2.0.0" / "Deploy.sh").is_file()
        assert not (home / "Applications" / "Test" / "web" / "2.0.1").exists()
    # The snapshot keeps its version in the feed, as a release does.
    refused = server.cli("package", "delete", "web", "2.0.0", "--yes")
    assert refused.returncode != 0
    assert "used by runbook snapshots Ops runbook Refresh web (Snapshot 1)" in refused.stderr
    pruned = server.cli("package", "prune", "--yes", "--output", "json", check=True).stdout
    assert "2.0.0" not in pruned, pruned
    assert "2.0.1" in pruned, pruned


def test_a_full_disk_on_one_machine_fails_acquisition_with_the_reason(
    fleet: tuple[Server, dict[str, Path]], cluster: Cluster, tmp_path: Path
) -> None:
    server, homes = fleet
    full = cluster.tentacles["web-02"]
    assert full.process is not None
    full.process.stop()
    config_path = full.home / "tentacle.json"
    config = json.loads(config_path.read_text())
    config["package_cache_min_free_bytes"] = 2**62  # any transfer would leave too little free
    config_path.write_text(json.dumps(config))
    full.start()
    make_package(tmp_path / "web.3.0.0.zip", "3.0.0")
    server.cli("package", "push", str(tmp_path / "web.3.0.0.zip"), check=True)
    server.cli("release", "create", "--project", "Web", "--version", "3.0.0", check=True)
    code, task_id, output = deploy(server, "3.0.0", "Dev")
    assert code != 0, output
    text = "\n".join(server_lines(server, task_id))
    assert "Acquire packages on web-02 failed" in text, text
    assert "disk full" in text, text
    # Nothing was deployed anywhere (the steps after a failed one are skipped), and the full
    # machine's cache holds no partial file.
    for home in homes.values():
        assert not (home / "Applications" / "Dev" / "web" / "3.0.0").exists()
    assert list((homes["web-02"] / "files" / "packages" / "incoming").iterdir()) == []
    task = json.loads(server.cli("task", "show", task_id, "--output", "json", check=True).stdout)
    by_id = {n["id"]: n for n in task["nodes"]}
    states = {
        (by_id[n["parent_id"]]["name"] if n["parent_id"] else "", n["name"]): n["state"]
        for n in task["nodes"]
    }
    assert states[("Acquire packages", "web-02")] == "failed"
    assert states[("Acquire packages", "web-01")] == "success"
    assert states[("", "Acquire packages")] == "failed"
    assert states[("", "Deploy web")] == "skipped"


def test_a_tentacle_s_own_extraction_limits_refuse_a_package(
    fleet: tuple[Server, dict[str, Path]], cluster: Cluster, tmp_path: Path
) -> None:
    server, homes = fleet
    strict = cluster.tentacles["web-03"]
    assert strict.process is not None
    strict.process.stop()
    config_path = strict.home / "tentacle.json"
    config = json.loads(config_path.read_text())
    config["package_max_entries"] = 50  # the package holds 105 files
    config_path.write_text(json.dumps(config))
    strict.start()
    make_package(tmp_path / "web.4.0.0.zip", "4.0.0")
    server.cli("package", "push", str(tmp_path / "web.4.0.0.zip"), check=True)
    server.cli("release", "create", "--project", "Web", "--version", "4.0.0", check=True)
    code, task_id, output = deploy(server, "4.0.0", "Dev")
    assert code != 0, output
    text = "\n".join(server_lines(server, task_id))
    assert "more than 50 entries" in text, text
    assert not (homes["web-03"] / "Applications" / "Dev" / "web" / "4.0.0").exists()
    # The others, with the default limits, took it.
    assert (homes["web-01"] / "Applications" / "Dev" / "web" / "4.0.0" / "Deploy.sh").is_file()

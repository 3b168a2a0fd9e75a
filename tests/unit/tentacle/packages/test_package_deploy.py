"""A ticket that deploys a cached package: extraction, substitution, package scripts, outputs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from cuttle.protocol.package_deployment import PackageDeployment
from cuttle.tentacle.config import ConfigError, InstanceHome, TentacleConfig
from cuttle.tentacle.execution.manager import ScriptManager, ScriptState, StartCommand, Syntax
from cuttle.tentacle.execution.model import Variable
from cuttle.tentacle.packages.cache import PackageCache
from cuttle.tentacle.packages.deploy import DeploySettings
from tests.unit.tentacle.execution.scenarios import lines_of, run_with

pytestmark = pytest.mark.timeout(60)

DEPLOY_SH = """echo "deploying $(get_octopusvariable Octopus.Action.Package.PackageVersion)"
echo "greeting=$(get_octopusvariable Greeting)"
pwd
set_octopusvariable Deployed yes
"""
PRE_PY = 'print("pre", get_octopusvariable("Octopus.Action.Package.PackageId"))\n'
POST_SH = "echo post; cat app.conf\n"


def _tar(path: Path, files: dict[str, bytes], modes: dict[str, int] | None = None) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = (modes or {}).get(name, 0o644)
            tar.addfile(info, io.BytesIO(data))


def _cache(home: Path, archive: Path, package_id: str, version: str) -> tuple[PackageCache, str]:
    cache = PackageCache(home / "files" / "packages")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    copy = home / "incoming.bin"
    copy.write_bytes(archive.read_bytes())
    cache.add(copy, package_id, version, sha)
    return cache, sha


def _package(sha: str, **kwargs: object) -> PackageDeployment:
    fields: dict[str, object] = {
        "sha256": sha,
        "package_id": "web",
        "version": "1.4.0",
        "format": "tar.gz",
        "environment": "Test",
        "run_package_scripts": True,
    }
    fields.update(kwargs)
    return PackageDeployment(**fields)  # type: ignore[arg-type]


async def _finish(m: ScriptManager, ticket: str) -> tuple[object, list[bytes]]:
    final = None
    lines: list[bytes] = []
    async for snapshot in m.watch(ticket):
        lines.extend(line.text for line in lines_of(snapshot.runs))
        final = snapshot
    return final, lines


def test_package_is_extracted_filled_in_and_its_scripts_run_in_order(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    archive = tmp_path / "web.1.4.0.tar.gz"
    _tar(
        archive,
        {
            "Deploy.sh": DEPLOY_SH.encode(),
            "PreDeploy.py": PRE_PY.encode(),
            "PostDeploy.sh": POST_SH.encode(),
            "app.conf": b"greeting = #{Greeting}\r\nenv = #{Octopus.Environment.Name}\r\n",
            "config/settings.json": json.dumps(
                {"Logging": {"LogLevel": {"Default": "Debug"}}, "Port": 80}, indent=2
            ).encode(),
            "bin/run": b"#!/bin/sh\n",
        },
        {"bin/run": 0o755},
    )
    cache, sha = _cache(home, archive, "web", "1.4.0")
    applications = tmp_path / "apps"
    settings = DeploySettings(cache, applications)
    variables = (
        Variable("Greeting", "hello"),
        Variable("Octopus.Environment.Name", "Test"),
        Variable("Logging:LogLevel:Default", "Warning"),
        Variable("Port", "8080"),
    )
    package = _package(
        sha,
        substitute_target_files=("*.conf",),
        structured_variable_files=("config/*.json",),
    )

    async def scenario(m: ScriptManager) -> None:
        for ticket in ("d1", "d2"):
            cmd = StartCommand(
                ticket=ticket, body="", syntax=Syntax.BASH, variables=variables, package=package
            )
            await m.start(cmd)
            final, lines = await _finish(m, ticket)
            assert final is not None
            assert final.state is ScriptState.COMPLETE, lines  # type: ignore[attr-defined]
            assert final.exit_code == 0  # type: ignore[attr-defined]
            outputs = {v.name: v.value for v in final.output_variables}  # type: ignore[attr-defined]
            folder = applications / "Test" / "web" / ("1.4.0" if ticket == "d1" else "1.4.0_1")
            assert outputs["Package.InstallationDirectoryPath"] == str(folder)
            assert outputs["Deployed"] == "yes"
            text = [line.decode() for line in lines]
            # PreDeploy, Deploy, PostDeploy in that order, in the installation folder.
            pre = text.index("pre web")
            deploying = text.index("deploying 1.4.0")
            post = text.index("post")
            assert pre < deploying < post
            assert "greeting=hello" in text
            assert str(folder) in text
            assert (folder / "app.conf").read_bytes() == b"greeting = hello\r\nenv = Test\r\n"
            settings_json = json.loads((folder / "config/settings.json").read_text())
            assert settings_json == {"Logging": {"LogLevel": {"Default": "Warning"}}, "Port": 8080}
            assert (folder / "bin/run").stat().st_mode & 0o777 == 0o755
            assert any("Substituted variables in 1 file: app.conf" in t for t in text)

    run_with(home, scenario, packages=settings)
    assert not cache.in_use(sha)


def test_unsafe_archive_fails_to_start_and_leaves_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ok.txt", "fine")
        z.writestr("../../escaped.txt", "bad")
    cache, sha = _cache(home, archive, "evil", "1.0.0")
    applications = tmp_path / "apps"
    package = _package(sha, package_id="evil", version="1.0.0", format="zip")

    async def scenario(m: ScriptManager) -> None:
        cmd = StartCommand(ticket="e1", body="", syntax=Syntax.BASH, package=package)
        await m.start(cmd)
        final, lines = await _finish(m, "e1")
        assert final.state is ScriptState.FAILED_TO_START  # type: ignore[attr-defined]
        assert "../../escaped.txt" in final.state_reason  # type: ignore[attr-defined]

    run_with(home, scenario, packages=DeploySettings(cache, applications))
    assert not list(applications.rglob("*.txt"))
    assert not (tmp_path / "escaped.txt").exists()


def test_a_package_not_in_the_cache_is_refused_with_the_reason(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    cache = PackageCache(home / "files" / "packages")
    package = _package("a" * 64)

    async def scenario(m: ScriptManager) -> None:
        await m.start(StartCommand(ticket="n1", body="", syntax=Syntax.BASH, package=package))
        final, _ = await _finish(m, "n1")
        assert final.state is ScriptState.FAILED_TO_START  # type: ignore[attr-defined]
        assert "not in this machine's package cache" in final.state_reason  # type: ignore[attr-defined]

    run_with(home, scenario, packages=DeploySettings(cache, tmp_path / "apps"))


def test_script_from_a_package_runs_with_arguments_in_the_workspace(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    archive = tmp_path / "tools.1.0.0.tar.gz"
    _tar(archive, {"scripts/check.sh": b'echo "args: $1 $2"; echo "$(get_octopusvariable X)"\n'})
    cache, sha = _cache(home, archive, "tools", "1.0.0")
    applications = tmp_path / "apps"
    package = _package(sha, package_id="tools", version="1.0.0", script_file="scripts/check.sh")

    async def scenario(m: ScriptManager) -> None:
        cmd = StartCommand(
            ticket="s1",
            body="",
            syntax=Syntax.BASH,
            arguments=("one", "two words"),
            variables=(Variable("X", "from-variables"),),
            package=package,
        )
        await m.start(cmd)
        final, lines = await _finish(m, "s1")
        assert final.state is ScriptState.COMPLETE, lines  # type: ignore[attr-defined]
        assert final.exit_code == 0  # type: ignore[attr-defined]
        assert b"args: one two words" in lines
        assert b"from-variables" in lines

    run_with(home, scenario, packages=DeploySettings(cache, applications))
    assert not applications.exists()


def test_custom_installation_directory_is_purged_except_kept_paths(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    archive = tmp_path / "site.2.0.0.tar.gz"
    _tar(archive, {"index.html": b"<h1>#{Title}</h1>", "Deploy.sh": b"pwd\n"})
    cache, sha = _cache(home, archive, "site", "2.0.0")
    custom = tmp_path / "srv" / "www" / "site"
    (custom / "logs").mkdir(parents=True)
    (custom / "logs" / "keep.log").write_text("old log")
    (custom / "stale.html").write_text("stale")
    package = _package(
        sha,
        package_id="site",
        version="2.0.0",
        custom_installation_directory=str(custom),
        purge_custom_installation_directory=True,
        purge_exclusions=("logs",),
        substitute_target_files=("index.html",),
    )

    async def scenario(m: ScriptManager) -> None:
        cmd = StartCommand(
            ticket="c1",
            body="",
            syntax=Syntax.BASH,
            variables=(Variable("Title", "Hi"),),
            package=package,
        )
        await m.start(cmd)
        final, lines = await _finish(m, "c1")
        assert final.state is ScriptState.COMPLETE, lines  # type: ignore[attr-defined]
        assert str(custom).encode() in lines  # Deploy.sh ran in the custom directory
        outputs = {v.name: v.value for v in final.output_variables}  # type: ignore[attr-defined]
        assert outputs["Package.InstallationDirectoryPath"] == str(custom)

    run_with(home, scenario, packages=DeploySettings(cache, tmp_path / "apps"))
    assert (custom / "index.html").read_text() == "<h1>Hi</h1>"
    assert (custom / "logs" / "keep.log").read_text() == "old log"
    assert not (custom / "stale.html").exists()


def test_retention_keeps_the_newest_versions(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    applications = tmp_path / "apps"
    caches: list[tuple[str, str]] = []
    cache = PackageCache(home / "files" / "packages")
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        archive = tmp_path / f"web.{version}.tar.gz"
        _tar(archive, {"v.txt": version.encode()})
        sha = hashlib.sha256(archive.read_bytes()).hexdigest()
        copy = home / "in.bin"
        copy.write_bytes(archive.read_bytes())
        cache.add(copy, "web", version, sha)
        caches.append((version, sha))

    async def scenario(m: ScriptManager) -> None:
        for index, (version, sha) in enumerate(caches):
            package = _package(sha, version=version, run_package_scripts=False)
            await m.start(
                StartCommand(ticket=f"r{index}", body="", syntax=Syntax.BASH, package=package)
            )
            final, lines = await _finish(m, f"r{index}")
            assert final.state is ScriptState.COMPLETE, lines  # type: ignore[attr-defined]

    run_with(home, scenario, packages=DeploySettings(cache, applications, keep=2))
    assert sorted(p.name for p in (applications / "Test" / "web").iterdir()) == ["1.1.0", "1.2.0"]


def test_more_package_deployments_at_once_than_default_threads_all_finish(
    tmp_path: Path,
) -> None:
    # Preparing a package runs on a thread that waits for the event loop to journal each line
    # it says ("Extracting ..."), and journaling goes through the loop's default executor. If
    # the preparations themselves held every default thread, nothing could journal and every
    # ticket would wait forever: seen with 10 polling Tentacles in one process (6 default
    # threads on 2 cores), and possible on one Tentacle with as many deployments at once.
    # Deployments of one version at once also race for the same free folder.
    home = tmp_path / "home"
    home.mkdir()
    archive = tmp_path / "web.1.4.0.tar.gz"
    # The script reads its folder after a while: retention by a later deployment (which keeps
    # 3) must not have removed it meanwhile.
    deploy = b"sleep 0.5; cat app.conf && echo deployed\n"
    _tar(archive, {"Deploy.sh": deploy, "app.conf": b"greeting = #{Greeting}\n"})
    cache, sha = _cache(home, archive, "web", "1.4.0")
    tickets = [f"c{k}" for k in range(5)]

    async def main() -> None:
        asyncio.get_running_loop().set_default_executor(
            concurrent.futures.ThreadPoolExecutor(max_workers=2)
        )
        manager = ScriptManager(home, packages=DeploySettings(cache, tmp_path / "apps"))
        await manager.recover()
        try:
            async with asyncio.timeout(30):
                for ticket in tickets:
                    await manager.start(
                        StartCommand(
                            ticket=ticket,
                            body="",
                            syntax=Syntax.BASH,
                            variables=(Variable("Greeting", "hi"),),
                            package=_package(sha, substitute_target_files=("*.conf",)),
                        )
                    )
                finals = await asyncio.gather(*(_finish(manager, t) for t in tickets))
        finally:
            await manager.close()
        folders = set()
        for final, lines in finals:
            assert final.state is ScriptState.COMPLETE, lines  # type: ignore[attr-defined]
            assert b"deployed" in lines
            assert b"greeting = hi" in lines
            outputs = {v.name: v.value for v in final.output_variables}  # type: ignore[attr-defined]
            folders.add(outputs["Package.InstallationDirectoryPath"])
        # The same version at once: each deployment still gets a folder of its own.
        base = tmp_path / "apps" / "Test" / "web"
        names = ("1.4.0", "1.4.0_1", "1.4.0_2", "1.4.0_3", "1.4.0_4")
        assert folders == {str(base / n) for n in names}

    asyncio.run(main())


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("applications_directory", "relative/apps", "must be an absolute path"),
        ("package_retention_keep", 0, "must be at least 1"),
        ("package_max_ratio", 0, "must be at least 1"),
        ("package_max_entries", "many", "must be a non-negative integer"),
        ("package_max_extracted_bytes", True, "must be a non-negative integer"),
    ],
)
def test_deployment_settings_are_checked_where_they_are_read(
    tmp_path: Path, key: str, value: object, message: str
) -> None:
    home = InstanceHome(tmp_path)
    config = TentacleConfig()
    config.package_max_entries = 50
    config.applications_directory = "/srv/apps"
    home.save(config)
    loaded = home.load()
    assert (loaded.package_max_entries, loaded.applications_directory) == (50, "/srv/apps")
    raw = json.loads(home.config_path.read_text())
    raw[key] = value
    home.config_path.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=f"{key} {message}"):
        home.load()

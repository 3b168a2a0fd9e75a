"""scripts/install-tentacle.sh installs, registers and runs a Tentacle, here and on stock Debian 12.

The Debian 12 test runs the installer in a debootstrap chroot as root, with Debian's own
Python (PEP 668 on, no pip, no python3-venv), against a real server on the host (the chroot
shares the host's loopback). The chroot is built once and cached (see harness/chroot.py).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.integration.harness import chroot
from tests.integration.harness.cluster import BIN, Cluster, Process, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install-tentacle.sh"


def _install(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=240,
    )


def test_one_line_install_registers_a_polling_tentacle_that_runs_scripts(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster.start_server()
    server.ensure_environments(("Dev",))
    prefix, home = tmp_path / "venv", tmp_path / "home"
    args = [
        "--server",
        server.url,
        "--server-thumbprint",
        server.thumbprint,
        "--name",
        "installed-01",
        "--environment",
        "Dev",
        "--role",
        "web",
        "--comms-style",
        "polling",
        "--polling-address",
        f"127.0.0.1:{server.polling_port}",
        "--source",
        str(ROOT / "tentacle"),
        "--prefix",
        str(prefix),
        "--home",
        str(home),
        "--no-service",
    ]
    refused = _install([*args, "--api-key", server.api_key], {})
    assert refused.returncode == 1
    assert "not on the command line" in refused.stderr

    installed = _install(args, {"CUTTLE_API_KEY": server.api_key})
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "is registered" in installed.stdout
    machines = server.cli_json("machine", "list")
    assert [m["name"] for m in machines] == ["installed-01"]

    agent = Process(
        "installed-01",
        [str(prefix / "bin" / "tentacle"), "run", "--home", str(home)],
        tmp_path / "installed.log",
        dict(os.environ),
    )
    cluster.procs.append(agent)
    agent.start()
    wait_for(
        lambda: any(m.get("connected") for m in server.cli_json("machine", "list")),
        60,
        "the installed Tentacle to connect",
        interval=0.5,
    )
    run = server.cli("script", "run", "--machine", "installed-01", "--", "echo installed-ok")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "installed-ok" in run.stdout

    # Running the installer again keeps the certificate and replaces the registration.
    def thumbprint() -> str:
        shown = subprocess.run(
            [str(prefix / "bin" / "tentacle"), "show-thumbprint", "--home", str(home)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return shown.stdout.strip()

    before = thumbprint()
    # --run-scripts-as reaches the instance's settings (root, as the Tentacle: nothing switches).
    again = _install([*args, "--run-scripts-as", "root"], {"CUTTLE_API_KEY": server.api_key})
    assert again.returncode == 0, again.stdout + again.stderr
    assert thumbprint() == before
    assert json.loads((home / "tentacle.json").read_text())["run_scripts_as"] == "root"
    (machine,) = server.cli_json("machine", "list")
    assert machine["thumbprint"] == before


def test_a_listening_install_reads_the_server_from_the_environment_and_binds_listen_host(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster.start_server()
    server.ensure_environments(("Dev",))
    prefix, home = tmp_path / "venv", tmp_path / "home"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ["--name", "listening-01", "--environment", "Dev", "--comms-style", "listening"]
    args += ["--listen-host", "127.0.0.1", "--port", str(port), "--public-hostname", "127.0.0.1"]
    args += ["--source", str(ROOT), "--prefix", str(prefix), "--home", str(home), "--no-service"]
    installed = _install(
        args,
        {
            "CUTTLE_SERVER": server.url,
            "CUTTLE_SERVER_THUMBPRINT": server.thumbprint,
            "CUTTLE_API_KEY": server.api_key,
        },
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    config = json.loads((home / "tentacle.json").read_text())
    assert (config["listen_host"], config["port"]) == ("127.0.0.1", port)

    agent = Process(
        "listening-01",
        [str(prefix / "bin" / "tentacle"), "run", "--home", str(home)],
        tmp_path / "listening.log",
        dict(os.environ),
    )
    cluster.procs.append(agent)
    agent.start()
    wait_for(lambda: (home / "ports.json").exists(), 60, "the installed Tentacle to listen")
    run = server.cli("script", "run", "--machine", "listening-01", "--", "echo listening-ok")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "listening-ok" in run.stdout


CHROOT_HOME = "/var/lib/cuttle-tentacle"
# Where installers before session 8 put the home; an install there keeps being used.
OLDER_HOME = "/etc/cuttle/tentacle"
CHROOT_PREFIX = "/opt/cuttle-tentacle"


def _stock_environment(**extra: str) -> dict[str, str]:
    """What a root shell on a fresh VM has: no virtualenv, the system's PATH."""
    env = {
        "PATH": "/decoy-venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        # The host's CA bundle, in case the registries are reached through a proxy with its own.
        "PIP_CERT": "/host-ca-certificates.crt",
    }
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy"):
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(extra)
    return env


def _copy_checkout(destination: Path) -> None:
    """What a user would copy to the VM: the installer and the two distributions' sources."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", "*.egg-info")
    for part in ("scripts", "protos", "tentacle"):
        shutil.copytree(ROOT / part, destination / part, ignore=skip)


# A system user the test makes in the chroot, as an operator would before installing.
SCRIPT_USER = "cuttle-scripts"


@pytest.mark.timeout(1800)
@pytest.mark.parametrize(
    ("run_scripts_as", "older_home"),
    [(None, False), (SCRIPT_USER, False), (None, True)],
    ids=["as-root", "run-scripts-as", "over-an-older-etc-home"],
)
def test_install_on_stock_debian_12_registers_a_polling_tentacle_that_runs_scripts(
    cluster: Cluster, tmp_path: Path, run_scripts_as: str | None, older_home: bool
) -> None:
    try:
        cached = chroot.debian12_root()
    except chroot.ChrootUnavailable as exc:
        pytest.skip(f"no Debian 12 chroot: {exc}")
    root = chroot.copy_root(cached, tmp_path / "debian12")
    try:
        try:
            chroot.check_usable(root)
        except chroot.ChrootUnavailable as exc:
            pytest.skip(str(exc))
        _install_in_chroot(cluster, root, tmp_path, run_scripts_as, older_home)
    finally:
        cluster.stop()
        chroot.remove_root(root)


def _install_in_chroot(
    cluster: Cluster, root: Path, tmp_path: Path, run_scripts_as: str | None, older_home: bool
) -> None:
    # Debian's own Python, with PEP 668 on, and neither pip nor venv's ensurepip.
    assert (root / "usr/lib/python3.11/EXTERNALLY-MANAGED").is_file()
    bare = subprocess.run(
        chroot.chroot_command(root, "/usr/bin/python3", "-c", "import ensurepip"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "No module named 'ensurepip'" in bare.stderr, "a stock Debian 12 has no python3-venv"
    # A virtual environment first on PATH (a leftover, or a user's) must not be used.
    decoy = root / "decoy-venv"
    (decoy / "bin").mkdir(parents=True)
    (decoy / "pyvenv.cfg").write_text("home = /usr/bin\n")
    for name in ("python3", "python3.11", "pip", "uv"):
        (decoy / "bin" / name).write_text("#!/bin/sh\necho decoy used >&2\nexit 97\n")
        (decoy / "bin" / name).chmod(0o755)
    _copy_checkout(root / "src" / "cuttle")

    server = cluster.start_server()
    server.ensure_environments(("Dev",))
    created = server.cli(
        "api-key", "create", "--permission", "machine:register", "--output", "json", check=True
    )
    register_key = json.loads(created.stdout)["api_key"]

    installer = ["/bin/bash", "/src/cuttle/scripts/install-tentacle.sh"]
    args = ["--name", "debian-12", "--environment", "Dev", "--role", "web"]
    args += ["--comms-style", "polling"]
    if run_scripts_as is not None:
        made = subprocess.run(
            chroot.chroot_command(
                root, "useradd", "--system", "--no-create-home", "--shell", "/bin/sh", SCRIPT_USER
            ),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert made.returncode == 0, made.stderr
        args += ["--run-scripts-as", run_scripts_as]
    env = _stock_environment(
        CUTTLE_SERVER=server.url,
        CUTTLE_SERVER_THUMBPRINT=server.thumbprint,
        CUTTLE_API_KEY=register_key,
    )

    def install(*extra: str) -> str:
        installed = subprocess.run(
            chroot.chroot_command(root, *installer, *args, *extra),
            capture_output=True,
            text=True,
            env=env,
            timeout=1200,
            check=False,
        )
        output = installed.stdout + installed.stderr
        assert installed.returncode == 0, output
        assert "decoy used" not in output
        return output

    home = CHROOT_HOME
    first = ""
    if older_home:
        # An install made before the default home moved out of /etc; upgrading keeps it.
        first = install("--home", OLDER_HOME, "--no-service")
        home = OLDER_HOME
        before = server.cli_json("machine", "list")[0]["thumbprint"]
    output = install()
    assert "installing python3.11-venv with apt" in first + output
    if older_home:
        assert f"keeping the existing home {OLDER_HOME}" in output, output
        assert not (root / CHROOT_HOME.lstrip("/") / "tentacle.json").exists()
        assert server.cli_json("machine", "list")[0]["thumbprint"] == before
    # The system Python was not changed: still no pip outside the Tentacle's environment.
    assert not list((root / "usr/lib/python3/dist-packages").glob("pip"))
    config = json.loads((root / home.lstrip("/") / "tentacle.json").read_text())
    assert config.get("run_scripts_as", "") == (run_scripts_as or "")
    (machine,) = server.cli_json("machine", "list")
    assert machine["name"] == "debian-12"

    # systemd is not running in a chroot: the unit is written for the next boot. Check it with
    # Debian 12's own systemd-analyze.
    unit = "/etc/systemd/system/cuttle-tentacle.service"
    text = (root / unit.lstrip("/")).read_text()
    assert f"ExecStart={CHROOT_PREFIX}/bin/tentacle run --home {home}" in text
    for command in (
        ["systemd-analyze", "verify", unit],
        # Fails if a change ever makes the unit more exposed than this.
        ["systemd-analyze", "security", "--offline=yes", "--threshold=93", unit],
    ):
        checked = subprocess.run(
            chroot.chroot_command(root, *command),
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr

    agent = Process(
        "debian-12",
        chroot.chroot_command(root, f"{CHROOT_PREFIX}/bin/tentacle", "run", "--home", home),
        tmp_path / "debian-12.log",
        env,
    )
    cluster.procs.append(agent)
    agent.start()
    wait_for(
        lambda: server.cli_json("machine", "list")[0].get("connected") or _exited(agent),
        60,
        "the Tentacle in the chroot to connect",
        interval=0.5,
    )
    script = ". /etc/os-release; echo on-$ID-$VERSION_ID as-$(id -un)"
    # The Tentacle's private key is for the Tentacle alone: a script run as another user cannot
    # read it (as root it can, as an Octopus root Tentacle's scripts can).
    script += f"; test -r {home}/key.pem && echo key-readable || echo key-unreadable"
    run = server.cli("script", "run", "--machine", "debian-12", "--", script)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"on-debian-12 as-{run_scripts_as or 'root'}" in run.stdout, run.stdout
    expected = "key-readable" if run_scripts_as is None else "key-unreadable"
    assert expected in run.stdout, run.stdout


def _exited(process: Process) -> bool:
    if not process.alive():
        raise AssertionError(f"{process.name} exited:\n{process.tail()}")
    return False


def test_the_service_unit_passes_systemd_analyze_here_too(tmp_path: Path) -> None:
    # The Debian 12 test checks the unit with Debian's systemd; this one runs wherever
    # systemd-analyze is installed, chroot or not (systemd need not be running).
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    units = tmp_path / "units"
    subprocess.run(
        [str(BIN / "tentacle"), "service", "install", "--home", str(tmp_path / "home")]
        + ["--unit-dir", str(units)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    unit = units / "cuttle-tentacle.service"
    assert f"ExecStart={BIN / 'tentacle'} run --home {tmp_path / 'home'}" in unit.read_text()
    for command in (
        [analyze, "verify", str(unit)],
        [analyze, "security", "--offline=yes", "--threshold=93", str(unit)],
    ):
        checked = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr

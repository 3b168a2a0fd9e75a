"""A stock Debian 12 root file system for installer tests, built once and cached.

`debootstrap` builds it from Debian's packages with what a stock cloud image has (python3 with
PEP 668's EXTERNALLY-MANAGED marker, systemd, CA certificates) and nothing more: no pip, no
python3-venv. The build takes minutes, so the finished tree is kept under
`/var/cache/cuttle-test/debian12-<hash of the inputs>` and each test works on a copy of it.
Commands run in it through `unshare --mount` + `chroot`: /proc and /dev are mounted in a private
mount namespace, so they vanish with the process and nothing is left mounted on the host. The
network (loopback included) is the host's, so a server on the host is reachable at 127.0.0.1.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

CACHE_ROOT = Path(os.environ.get("CUTTLE_TEST_CACHE", "/var/cache/cuttle-test"))
SUITE = "bookworm"
MIRROR = os.environ.get("CUTTLE_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What a stock Debian 12 VM has: its own python3 (PEP 668 on), systemd, CA certificates.
PACKAGES = ("python3", "systemd", "ca-certificates")
# Bump when the build steps change, so an old cached tree is not reused.
RECIPE = "1"
BUILD_TIMEOUT = 1500.0


class ChrootUnavailable(RuntimeError):
    """The chroot cannot be built here; the message says why (a reason to skip)."""


def _key() -> str:
    inputs = "\n".join([RECIPE, SUITE, MIRROR, "minbase", *PACKAGES])
    return hashlib.sha256(inputs.encode()).hexdigest()[:16]


def debian12_root() -> Path:
    """The cached stock Debian 12 tree, built with debootstrap the first time."""
    if os.geteuid() != 0:
        raise ChrootUnavailable("building and entering a chroot needs root")
    debootstrap = shutil.which("debootstrap") or _install_debootstrap()
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    target = CACHE_ROOT / f"debian12-{_key()}"
    done = target / ".cuttle-test-complete"
    with (CACHE_ROOT / f"{target.name}.lock").open("w") as lock:
        # Two test workers asking at once build it once.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.exists():
            return target
        building = target.with_name(target.name + ".building")
        shutil.rmtree(building, ignore_errors=True)
        result = subprocess.run(
            [
                debootstrap,
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(building),
                MIRROR,
            ],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            shutil.rmtree(building, ignore_errors=True)
            # A failure, not a skip: Debian's mirror is reachable wherever the tests run.
            raise AssertionError(
                f"debootstrap {SUITE} from {MIRROR} failed:\n{result.stdout[-2000:]}"
                f"{result.stderr[-2000:]}"
            )
        # The tree is only ever copied: its apt lists are kept, so `apt-get install` in a copy
        # works as on a fresh VM after `apt-get update`.
        (building / ".cuttle-test-complete").write_text(_key())
        shutil.rmtree(target, ignore_errors=True)
        building.rename(target)
        return target


def _install_debootstrap() -> str:
    if shutil.which("apt-get") is None:
        raise ChrootUnavailable("debootstrap is not installed and there is no apt-get to get it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "debootstrap"])
    for command in steps:
        result = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=600, check=False
        )
        if result.returncode != 0:
            raise ChrootUnavailable(f"cannot install debootstrap: {result.stderr[-1000:]}")
    found = shutil.which("debootstrap")
    if found is None:
        raise ChrootUnavailable("debootstrap was installed but is not on PATH")
    return found


def copy_root(cached: Path, destination: Path) -> Path:
    """A private copy of the cached tree for one test, with the host's DNS and CA bundle."""
    subprocess.run(
        ["cp", "-a", "--reflink=auto", str(cached), str(destination)], check=True, timeout=600
    )
    # The chroot reaches the same registries as the host: the same resolver, and the host's CA
    # bundle (a proxy's CA may be in it; the chroot's own bundle stays as Debian ships it).
    shutil.copyfile("/etc/resolv.conf", destination / "etc" / "resolv.conf")
    host_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if host_bundle.exists():
        shutil.copyfile(host_bundle, destination / "host-ca-certificates.crt")
    return destination


def chroot_command(root: Path, *command: str) -> list[str]:
    """argv running command inside root with /proc and /dev mounted privately; pid preserved."""
    # Each step execs the next, so the pid a test starts is the command's: killing its process
    # group reaches everything it started. The mounts live only in this mount namespace.
    setup = (
        'mount -t proc proc "$0/proc" && mount --rbind /dev "$0/dev" && '
        'mount -t tmpfs tmpfs "$0/run" && exec chroot "$0" "$@"'
    )
    namespace = ["unshare", "--mount", "--propagation", "private"]
    return [*namespace, "sh", "-c", setup, str(root), *command]


def check_usable(root: Path) -> None:
    """Enter the tree once; ChrootUnavailable when this machine does not allow it."""
    entered = subprocess.run(
        chroot_command(root, "/bin/true"), capture_output=True, text=True, timeout=60, check=False
    )
    if entered.returncode != 0:
        raise ChrootUnavailable(
            f"cannot enter a chroot with private mounts here (unshare/mount): {entered.stderr}"
        )


def remove_root(root: Path) -> None:
    """Delete a test's copy (nothing is mounted in it outside the private namespaces)."""
    shutil.rmtree(root, ignore_errors=True)

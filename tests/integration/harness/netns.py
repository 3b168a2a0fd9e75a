"""A network namespace joined to this one by a veth pair, with nftables rules inside it.

Each test gets its own namespace with a random /30 from 169.254.0.0/16, made for the test and
deleted after it: the root side of the veth holds one address (the server binds it), the
namespace side the other (a Tentacle lives there). Rules go in tables *inside* the namespace,
like a firewall in front of a VM, so the host's own ruleset is never touched.

Processes are started in the namespace by prefixing their command with `ip netns exec NAME`,
which execs the command in place: the pid the harness holds is the process itself, so its
process-group teardown still applies. Anything left in the namespace is killed on exit.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import pytest

# Link-local space: never routed, so nothing we add here can shadow a real network. The first
# and last /24 and 169.254.169.0/24 (cloud metadata services) are left alone.
_LINK_LOCAL = ipaddress.IPv4Network("169.254.0.0/16")
_AVOID = (
    ipaddress.IPv4Network("169.254.0.0/24"),
    ipaddress.IPv4Network("169.254.169.0/24"),
    ipaddress.IPv4Network("169.254.255.0/24"),
)

FIREWALL_TABLE = "cuttle_firewall"
BLACK_HOLE_TABLE = "cuttle_black_hole"


def _ip(*args: str, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", *args], capture_output=True, text=True, input=input_text, timeout=30
    )


def _checked(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(result.args)} exited {result.returncode}: {result.stderr.strip()}"
        )
    return result


@functools.cache
def namespace_support() -> str | None:
    """Why this machine cannot run namespace tests, or None when it can (checked once)."""
    if os.geteuid() != 0:
        return "network namespace tests need root (ip netns add needs CAP_SYS_ADMIN)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"network namespace tests need `{tool}` (install {package})"
    try:
        with Namespace.create() as probe:
            probe.nft(f"table inet {FIREWALL_TABLE} {{ }}")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot create a network namespace with a veth pair and nftables here: {exc}"
    return None


def require_namespaces() -> None:
    """Skip the calling test, saying why, when namespaces cannot be made here."""
    reason = namespace_support()
    if reason is not None:
        pytest.skip(reason)


def _used_networks() -> list[ipaddress.IPv4Network]:
    routes = json.loads(_checked(_ip("-4", "-j", "route", "show", "table", "all")).stdout or "[]")
    used = []
    for route in routes:
        dst = route.get("dst", "")
        if dst and dst != "default":
            with suppress(ValueError):
                used.append(ipaddress.IPv4Network(dst, strict=False))
    return used


def _free_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    candidates = list(_LINK_LOCAL.subnets(new_prefix=30))
    for _ in range(200):
        subnet = random.choice(candidates)  # noqa: S311 - picking a test subnet, not a secret
        if not any(subnet.overlaps(net) for net in (*_AVOID, *used)):
            return subnet
    raise RuntimeError("found no free /30 in 169.254.0.0/16 for a test namespace")


@dataclass
class Namespace:
    """One namespace, its veth pair and addresses; a context manager that removes them."""

    name: str
    host_interface: str
    inner_interface: str
    host_address: str
    inner_address: str
    _black_hole_family: str = "netdev"

    @classmethod
    @contextmanager
    def create(cls) -> Iterator[Namespace]:
        """Make a namespace joined to this one by a veth pair; always removed on exit."""
        token = secrets.token_hex(3)
        subnet = _free_subnet()
        host_ip, inner_ip = list(subnet.hosts())
        ns = cls(
            name=f"cuttle-test-{os.getpid()}-{token}",
            host_interface=f"ct{token}h",
            inner_interface=f"ct{token}n",
            host_address=str(host_ip),
            inner_address=str(inner_ip),
        )
        _checked(_ip("netns", "add", ns.name))
        try:
            ns._link(subnet.prefixlen)
            yield ns
        finally:
            ns.destroy()

    def _link(self, prefix: int) -> None:
        _checked(
            _ip(
                "link",
                "add",
                self.host_interface,
                "type",
                "veth",
                "peer",
                "name",
                self.inner_interface,
                "netns",
                self.name,
            )
        )
        _checked(_ip("addr", "add", f"{self.host_address}/{prefix}", "dev", self.host_interface))
        _checked(_ip("link", "set", self.host_interface, "up"))
        inner = ("-n", self.name)
        _checked(
            _ip(
                *inner, "addr", "add", f"{self.inner_address}/{prefix}", "dev", self.inner_interface
            )
        )
        _checked(_ip(*inner, "link", "set", self.inner_interface, "up"))
        _checked(_ip(*inner, "link", "set", "lo", "up"))

    @property
    def prefix(self) -> list[str]:
        """The command prefix that runs a program inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def nft(self, ruleset: str) -> None:
        """Load an nftables ruleset inside the namespace."""
        _checked(_ip("netns", "exec", self.name, "nft", "-f", "-", input_text=ruleset))

    def ruleset(self) -> str:
        """The namespace's nftables ruleset as text (for failure reports)."""
        return _ip("netns", "exec", self.name, "nft", "list", "ruleset").stdout

    def drop_new_inbound_tcp(self) -> None:
        """A firewall in front of a VM: replies and outbound connections pass, new inbound don't."""
        self.nft(
            f"""
            table inet {FIREWALL_TABLE} {{
                chain input {{
                    type filter hook input priority filter; policy accept;
                    ct state established,related accept
                    iifname "lo" accept
                    meta l4proto tcp ct state new drop
                }}
            }}
            """
        )

    def black_hole(self) -> None:
        """Drop every packet on the inner veth, both ways: each side meets silence, no reset.

        Dropping at the device (netdev ingress/egress) is what a dead link looks like: neither
        TCP stack gets an error, unlike a drop in the IP output hook, which hands the sender
        EPERM. Kernels before 5.16 have no egress hook; there the IP hooks stand in.
        """
        device = self.inner_interface
        try:
            self.nft(
                f"""
                table netdev {BLACK_HOLE_TABLE} {{
                    chain ingress {{
                        type filter hook ingress device "{device}" priority filter; policy drop;
                    }}
                    chain egress {{
                        type filter hook egress device "{device}" priority filter; policy drop;
                    }}
                }}
                """
            )
            self._black_hole_family = "netdev"
        except RuntimeError:
            self.nft(
                f"""
                table inet {BLACK_HOLE_TABLE} {{
                    chain input {{
                        type filter hook input priority raw; policy accept;
                        iifname "{device}" drop
                    }}
                    chain output {{
                        type filter hook output priority raw; policy accept;
                        oifname "{device}" drop
                    }}
                }}
                """
            )
            self._black_hole_family = "inet"

    def end_black_hole(self) -> None:
        """Let traffic through the veth again."""
        self.nft(f"delete table {self._black_hole_family} {BLACK_HOLE_TABLE}")

    def end_firewall(self) -> None:
        """Remove the firewall of drop_new_inbound_tcp."""
        self.nft(f"delete table inet {FIREWALL_TABLE}")

    def pids(self) -> list[int]:
        """Processes running in the namespace."""
        out = _ip("netns", "pids", self.name).stdout
        return [int(pid) for pid in out.split()]

    def destroy(self) -> None:
        """Kill what still runs inside, then delete the namespace (its veth goes with it)."""
        for pid in self.pids():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _ip("netns", "del", self.name)
        # Deleting the namespace removes both ends; this only matters if that failed half-way.
        if _ip("link", "show", self.host_interface).returncode == 0:
            _ip("link", "del", self.host_interface)

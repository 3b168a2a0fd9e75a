"""Pinning both ways: unknown certificates never get an HTTP/2 frame; removal ends streams."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from datetime import datetime
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cuttle.protocol import channel, pki
from tests.integration.harness.cluster import BIN, Cluster, Server, wait_for

pytestmark = pytest.mark.integration


def _tls_handshake(port: int, identity: pki.Identity | None, tmp_path: Path) -> bytes:
    """Connect as a plain TLS client; return the first bytes the server sent (b"" if refused)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    if identity is not None:
        (tmp_path / "k.pem").write_bytes(identity.key_pem)
        (tmp_path / "c.pem").write_bytes(identity.certificate_pem)
        context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
            context.wrap_socket(sock, server_hostname="cuttle") as tls,
        ):
            # TLS 1.3 reports a refused client certificate only on the first read.
            tls.settimeout(3)
            return tls.recv(1024)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return b""


def _grpc_health(port: int, identity: pki.Identity, peer_pem: bytes, name: str) -> grpc.StatusCode:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=peer_pem,
        private_key=identity.key_pem,
        certificate_chain=identity.certificate_pem,
    )
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, channel.client_options(name)) as ch:
        try:
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=3)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
        return grpc.StatusCode.OK


def test_unknown_certificates_are_refused_before_any_request(
    cluster: Cluster, tmp_path: Path
) -> None:
    server = cluster.start_server()
    listening = cluster.add_tentacle("web-01", "listening")
    cluster.add_tentacle("web-02", "polling")
    stranger = pki.generate_identity("stranger", pki.SERVER_NAME)
    tentacle_pem = (listening.home / "certificate.pem").read_bytes()
    server_pem = (server.home / "server-certificate.pem").read_bytes()

    # Listening Tentacle: no certificate, and an unknown one, never get a frame.
    for who in (None, stranger):
        assert _tls_handshake(listening.port, who, tmp_path) == b""
    assert _grpc_health(listening.port, stranger, tentacle_pem, pki.TENTACLE_NAME) == (
        grpc.StatusCode.UNAVAILABLE
    )
    # Polling endpoint: same.
    for who in (None, stranger):
        assert _tls_handshake(server.polling_port, who, tmp_path) == b""
    assert _grpc_health(server.polling_port, stranger, server_pem, pki.SERVER_NAME) == (
        grpc.StatusCode.UNAVAILABLE
    )
    # The positive control: the trusted server gets an HTTP/2 SETTINGS frame from the Tentacle.
    trusted = pki.load_identity(
        server.home / "server-key.pem", server.home / "server-certificate.pem"
    )
    first = _tls_handshake(listening.port, trusted, tmp_path)
    assert first[3] == 0x04, "expected an HTTP/2 SETTINGS frame from a trusted handshake"


def test_registration_needs_a_valid_api_key_and_refuses_ca_certificates(
    cluster: Cluster,
) -> None:
    server = cluster.start_server()
    t = cluster.add_tentacle("web-01", "polling")
    bad_key = t.tentacle(
        "register-with",
        "--server",
        server.url,
        "--server-thumbprint",
        server.thumbprint,
        "--api-key",
        "CUTTLE-not-a-real-key",
        "--name",
        "intruder",
        "--environment",
        "Dev",
        "--comms-style",
        "polling",
        check=False,
    )
    assert bad_key.returncode != 0
    assert "unauthenticated" in bad_key.stderr
    names = [m["name"] for m in server.cli_json("machine", "list")]
    assert names == ["web-01"]


def test_removing_a_polling_machine_ends_its_stream_within_a_second(cluster: Cluster) -> None:
    server = cluster.start_server()
    tentacle = cluster.add_tentacle("web-01", "polling")
    assert server.cli("script", "run", "--machine", "web-01", "--", "echo hi").returncode == 0
    server.cli("machine", "remove", "web-01", "--yes", check=True)
    wait_for(
        lambda: "polling_stream_closed" in (server.home / "server.log").read_text(),
        5,
        "the server to close the removed machine's stream",
    )
    # Measured by the server's own clock: the CLI's start-up is not part of the promise and
    # is slow on a loaded machine.
    removed = _event_time(server, "machine_removed")
    closed = _event_time(server, "polling_stream_closed")
    assert 0 <= closed - removed < 1.0, (removed, closed)
    # Its certificate is refused from now on: the Tentacle cannot reconnect.
    wait_for(
        lambda: (tentacle.home / "tentacle.log").read_text().count("polling_stream_failed") >= 1,
        10,
        "the removed Tentacle's reconnect to be refused",
    )
    assert server.cli_json("machine", "list") == []


def _event_time(server: Server, name: str) -> float:
    """When the server logged an event first, in seconds since the epoch."""
    for line in (server.home / "server.log").read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == name:
            return datetime.fromisoformat(event["timestamp"]).timestamp()
    raise AssertionError(f"the server never logged {name}")


def test_trust_by_thumbprint_fetches_and_pins_the_servers_certificate(cluster: Cluster) -> None:
    server = cluster.start_server()
    tentacle = cluster.add_tentacle("web-01", "listening")
    tentacle.tentacle("configure", "--remove-trust", server.thumbprint)
    # Untrusted, the Tentacle refuses the server's handshake: the script cannot run.
    wait_for(
        lambda: server.cli("script", "run", "--machine", "web-01", "--", "echo hi").returncode,
        10,
        "the Tentacle to refuse the server it no longer trusts",
    )

    # Re-trusted by thumbprint alone (the certificate is fetched from the registered server).
    tentacle.tentacle("configure", "--trust", server.thumbprint)
    config = json.loads((tentacle.home / "tentacle.json").read_text())
    [entry] = config["trusted_servers"]
    assert entry["thumbprint"] == server.thumbprint
    assert (
        entry["certificate_pem"].encode() == (server.home / "server-certificate.pem").read_bytes()
    )
    wait_for(
        lambda: server.cli("script", "run", "--machine", "web-01", "--", "echo hi").returncode == 0,
        10,
        "the re-trusted server to be accepted",
    )


def test_trust_by_a_wrong_thumbprint_or_an_unreachable_server_is_refused(
    cluster: Cluster,
) -> None:
    server = cluster.start_server()
    tentacle = cluster.add_tentacle("web-01", "polling")
    before = (tentacle.home / "tentacle.json").read_bytes()
    other = pki.generate_identity("other", pki.SERVER_NAME).thumbprint

    wrong = tentacle.tentacle("configure", "--trust", other, "--server", server.url, check=False)
    assert wrong.returncode != 0
    assert f"presented certificate {server.thumbprint}, not the expected {other}" in wrong.stderr

    # A port nothing listens on: bound and closed again, so the connection is refused.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    unreachable = tentacle.tentacle(
        "configure", "--trust", other, "--server", f"https://127.0.0.1:{closed_port}", check=False
    )
    assert unreachable.returncode != 0
    assert f"cannot reach the server at 127.0.0.1:{closed_port}" in unreachable.stderr
    assert "nothing was trusted" in unreachable.stderr
    # Nor can a rotation be recorded for a certificate the server does not present.
    rotated = tentacle.tentacle(
        "update-trust", "--old", server.thumbprint, "--new", other, check=False
    )
    assert rotated.returncode != 0
    assert f"presented certificate {server.thumbprint}, not the expected {other}" in rotated.stderr
    # No attempt changed what the Tentacle trusts.
    assert (tentacle.home / "tentacle.json").read_bytes() == before


def test_registering_a_taken_name_again_names_the_force_flag(cluster: Cluster) -> None:
    server = cluster.start_server()
    tentacle = cluster.add_tentacle("web-01", "polling")
    # A new certificate needs the agent stopped (it would go on serving the old key).
    assert tentacle.process is not None
    tentacle.process.stop()
    tentacle.tentacle("new-certificate")
    # The server, its thumbprint and the key come from the environment, as for `cuttle`.
    again = subprocess.run(
        [str(BIN / "tentacle"), "register-with", "--home", str(tentacle.home)]
        + ["--name", "web-01", "--environment", "Dev", "--comms-style", "polling"],
        capture_output=True,
        text=True,
        env=server.cli_env(),
        timeout=60,
        check=False,
    )
    assert again.returncode != 0
    assert "a machine named 'web-01' is already registered" in again.stderr
    assert "tentacle register-with --force" in again.stderr

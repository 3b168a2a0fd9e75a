"""How the admin client reaches a server: pinned TLS, API key, typed errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import click
import grpc
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from cuttle.protocol import channel, pki
from cuttle.protocol.errors import kind_from_rpc_error
from cuttle.protocol.v1 import admin_pb2_grpc, model_pb2_grpc, packages_pb2_grpc


@dataclass(frozen=True)
class ServerAddress:
    """Where the admin API is, and how to know it is really ours."""

    host: str
    port: int
    thumbprint: str
    api_key: str

    @property
    def target(self) -> str:
        """host:port for gRPC."""
        return f"{self.host}:{self.port}"


def parse_server(url: str, thumbprint: str, api_key: str) -> ServerAddress:
    """Validate the connection options; a clear error says which one is wrong."""
    parsed = urlparse(url if "://" in url else f"https://{url}")
    if not parsed.hostname:
        raise click.UsageError(f"--server {url!r}: expected https://host:port")
    if not thumbprint:
        raise click.UsageError(
            "--server-thumbprint (or CUTTLE_SERVER_THUMBPRINT) is required, or `cuttle login`"
        )
    if not api_key:
        raise click.UsageError("--api-key (or CUTTLE_API_KEY) is required, or `cuttle login`")
    try:
        thumbprint = pki.normalize_thumbprint(thumbprint)
    except pki.CertificateError as exc:
        raise click.UsageError(f"--server-thumbprint: {exc}") from exc
    return ServerAddress(parsed.hostname, parsed.port or 8443, thumbprint, api_key)


class AdminConnection:
    """An open, pinned channel to the admin API."""

    def __init__(self, address: ServerAddress) -> None:
        self.address = address
        try:
            pem = pki.fetch_peer_certificate(address.host, address.port)
        except OSError as exc:
            raise click.ClickException(f"cannot reach {address.target}: {exc}") from exc
        actual = pki.thumbprint_of_pem(pem)
        if actual != address.thumbprint:
            raise click.ClickException(
                f"{address.target} presented certificate {actual}, not {address.thumbprint}: "
                "refusing to talk to it"
            )
        self.channel = grpc.aio.secure_channel(
            address.target,
            grpc.ssl_channel_credentials(root_certificates=pem),
            options=channel.client_options(pki.SERVER_NAME),
        )
        self.stub = admin_pb2_grpc.AdminServiceStub(self.channel)
        self.model = model_pb2_grpc.ModelServiceStub(self.channel)
        self.access = model_pb2_grpc.AccessServiceStub(self.channel)
        self.releases = model_pb2_grpc.ReleaseServiceStub(self.channel)
        self.runbooks = model_pb2_grpc.RunbookServiceStub(self.channel)
        self.deployments = model_pb2_grpc.DeploymentServiceStub(self.channel)
        self.interruptions = model_pb2_grpc.InterruptionServiceStub(self.channel)
        self.dashboard = model_pb2_grpc.DashboardServiceStub(self.channel)
        self.packages = packages_pb2_grpc.PackageServiceStub(self.channel)
        self.metadata = (("x-api-key", address.api_key),)

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close(None)


def describe(error: grpc.aio.AioRpcError) -> str:
    """An explanation of a failed admin call, one line per field problem when there are any."""
    kind = kind_from_rpc_error(error)
    details = error.details() or ""
    if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
        # gRPC's own words ("Received message larger than max (N vs. M)") name no limit a
        # user knows: say which one it is and that nothing was done.
        return (
            f"a message was larger than the {format_bytes(channel.MAX_MESSAGE_BYTES)} that one "
            f"gRPC message between the CLI and the server may hold; the call was not carried "
            f"out ({details}) [{kind}]"
        )
    violations = field_violations(error)
    if violations:
        lines = "\n".join(
            f"  {field}: {message}" if field else f"  {message}" for field, message in violations
        )
        return f"the server refused the request [{kind}]:\n{lines}"
    return f"{error.details()} [{kind}]"


def format_bytes(size: int) -> str:
    """A byte count for people: 16 MiB, 4.2 MiB, 812 KiB, 12 bytes."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} bytes"


def check_request_size(request: Message, source: str, hint: str) -> None:
    """Refuse, before sending, a request larger than one gRPC message may be."""
    size = request.ByteSize()
    if size <= channel.MAX_MESSAGE_BYTES:
        return
    raise click.ClickException(
        f"{source}: the request would be {format_bytes(size)} ({size:,} bytes), more than the "
        f"{format_bytes(channel.MAX_MESSAGE_BYTES)} limit of one message to the server; "
        f"nothing was sent. {hint}"
    )


def field_violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """The (field, message) pairs of a google.rpc.BadRequest in the error's details."""
    metadata: Any = error.trailing_metadata() or ()
    for key, value in metadata:
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        found: list[tuple[str, str]] = []
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                found.extend((v.field, v.description) for v in bad.field_violations)
        return found
    return []


_STATUS_DETAILS_KEY = "grpc-status-details-bin"

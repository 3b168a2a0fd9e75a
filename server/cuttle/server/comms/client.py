"""TentacleClient: everything the engine asks of an agent, whatever the transport.

A Transport moves one TentacleService call (method name, serialized request) and gives back the
serialized answer(s); listening and polling each implement it once. Nothing above comms/ knows
which of the two a machine uses.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Protocol, TypeVar

from google.protobuf.message import Message

from cuttle.protocol.v1 import tentacle_pb2 as pb
from cuttle.server.comms import convert
from cuttle.server.domain.package_transfer import PackageLookup, TransferBegin, TransferState
from cuttle.server.domain.scripts import AgentInfo, ScriptRequest, ScriptStatus
from cuttle.server.errors import AgentError, InvalidArgument

M = TypeVar("M", bound=Message)

# DESIGN §7: files move in chunks of at least 256 KiB; 1 MiB keeps per-message cost negligible.
CHUNK_BYTES = 1024 * 1024
# Script files up to this size travel inside StartScript; larger ones are uploaded in chunks
# first, so the start message stays small whatever the files weigh (never near the limit).
INLINE_FILE_BYTES = 256 * 1024


class Transport(Protocol):
    """Carries TentacleService calls to one machine."""

    machine: str

    async def unary(self, method: str, payload: bytes, timeout: float | None) -> bytes:
        """One request, one answer."""
        ...

    def stream(self, method: str, payload: bytes) -> AsyncIterator[bytes]:
        """One request, answers until the agent ends the stream."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class TentacleClient:
    """The agent contract of DESIGN §3 over any Transport."""

    def __init__(self, transport: Transport, default_timeout: float = 60.0) -> None:
        self.transport = transport
        self.machine = transport.machine
        self._timeout = default_timeout

    async def _call(
        self, method: str, request: Message, reply: type[M], timeout: float | None
    ) -> M:
        data = await self.transport.unary(
            method, request.SerializeToString(), timeout if timeout is not None else self._timeout
        )
        return reply.FromString(data)

    async def get_info(self, timeout: float | None = None) -> AgentInfo:
        """Ask the agent what it is (health checks)."""
        info = await self._call("GetInfo", pb.GetInfoRequest(), pb.TentacleInfo, timeout)
        return convert.agent_info(info)

    async def start_script(self, request: ScriptRequest) -> ScriptStatus:
        """Start a script, its large files uploaded first; idempotent per ticket."""
        status = await self._call(
            "StartScript", await self._start_request(request), pb.ScriptStatus, None
        )
        return convert.script_status(status)

    async def _start_request(self, request: ScriptRequest) -> pb.StartScriptRequest:
        transfers = {
            file.name: await self.upload(file.content)
            for file in request.files
            if len(file.content) > INLINE_FILE_BYTES
        }
        return convert.start_request(request, transfers)

    async def get_status(self, ticket: str, after_sequence: int = 0) -> ScriptStatus:
        """State and the next batch of journal lines after a sequence."""
        status = await self._call(
            "GetStatus",
            pb.ScriptTicketRequest(ticket=ticket, after_sequence=after_sequence),
            pb.ScriptStatus,
            None,
        )
        return convert.script_status(status)

    async def watch_script(
        self, ticket: str, after_sequence: int = 0, *, start: ScriptRequest | None = None
    ) -> AsyncIterator[ScriptStatus]:
        """Stream batches of new lines until the script ends; with `start`, start it first.

        Starting in the watch is StartScript's idempotent start without its own round trip.
        """
        request = pb.WatchScriptRequest(ticket=ticket, after_sequence=after_sequence)
        if start is not None:
            request.start.CopyFrom(await self._start_request(start))
        async for data in self.transport.stream("WatchScript", request.SerializeToString()):
            yield convert.script_status(pb.ScriptStatus.FromString(data))

    async def cancel_script(self, ticket: str, reason: str) -> ScriptStatus:
        """Kill the script's process tree; returns once the agent confirmed."""
        status = await self._call(
            "CancelScript",
            pb.CancelScriptRequest(ticket=ticket, reason=reason),
            pb.ScriptStatus,
            None,
        )
        return convert.script_status(status)

    async def complete_script(self, ticket: str) -> ScriptStatus:
        """Tell the agent it may delete the ticket."""
        status = await self._call(
            "CompleteScript", pb.ScriptTicketRequest(ticket=ticket), pb.ScriptStatus, None
        )
        return convert.script_status(status)

    async def complete_scripts(self, tickets: Sequence[str]) -> list[str]:
        """Tell the agent it may delete several tickets; returns those it did not know."""
        reply = await self._call(
            "CompleteScripts",
            pb.CompleteScriptsRequest(tickets=list(tickets)),
            pb.CompleteScriptsResponse,
            None,
        )
        return list(reply.unknown)

    async def upload(self, content: bytes) -> str:
        """Send a file in chunks; returns the transfer id to reference it in a script."""
        transfer_id = uuid.uuid4().hex
        for offset in range(0, len(content), CHUNK_BYTES) or [0]:
            await self._call(
                "UploadChunk",
                pb.UploadChunkRequest(
                    transfer_id=transfer_id,
                    offset=offset,
                    data=content[offset : offset + CHUNK_BYTES],
                ),
                pb.UploadChunkResult,
                None,
            )
        await self._call(
            "CommitUpload",
            pb.CommitUploadRequest(
                transfer_id=transfer_id,
                size=len(content),
                sha256=hashlib.sha256(content).hexdigest(),
            ),
            pb.CommitUploadResult,
            None,
        )
        return transfer_id

    async def download(self, ticket: str, path: str, max_bytes: int) -> bytes:
        """Fetch a file from a ticket's workspace, verified by SHA-256."""
        parts: list[bytes] = []
        offset = 0
        while True:
            chunk = await self._call(
                "DownloadChunk",
                pb.DownloadChunkRequest(
                    ticket=ticket, path=path, offset=offset, length=CHUNK_BYTES
                ),
                pb.DownloadChunkResult,
                None,
            )
            if chunk.total_size > max_bytes:
                raise InvalidArgument(
                    f"{path} on {self.machine} is {chunk.total_size} bytes; limit {max_bytes}"
                )
            parts.append(chunk.data)
            offset += len(chunk.data)
            if chunk.eof:
                break
            if not chunk.data:
                raise AgentError(f"{self.machine}: download of {path} stalled at {offset}")
        content = b"".join(parts)
        digest = hashlib.sha256(content).hexdigest()
        if chunk.sha256 and digest != chunk.sha256.lower():
            raise AgentError(
                f"{self.machine}: {path} arrived corrupt (sha256 {digest}, agent said "
                f"{chunk.sha256})"
            )
        return content

    async def find_package(self, sha256: str, package_id: str) -> PackageLookup:
        """Whether the agent's cache holds this package, else its best delta basis."""
        reply = await self._call(
            "FindPackage",
            pb.FindPackageRequest(sha256=sha256, package_id=package_id),
            pb.FindPackageResult,
            None,
        )
        return PackageLookup(
            cached=reply.cached,
            basis_sha256=reply.basis_sha256,
            basis_version=reply.basis_version,
            basis_size=reply.basis_size,
            signature_size=reply.signature_size,
        )

    async def package_signature(self, basis_sha256: str, max_bytes: int) -> bytes:
        """The delta signature of a cached package, fetched in chunks."""
        parts: list[bytes] = []
        offset = 0
        while True:
            chunk = await self._call(
                "GetPackageSignature",
                pb.PackageSignatureRequest(
                    basis_sha256=basis_sha256, offset=offset, length=CHUNK_BYTES
                ),
                pb.PackageSignatureChunk,
                None,
            )
            if chunk.total_size > max_bytes:
                raise InvalidArgument(
                    f"the signature of {basis_sha256} on {self.machine} is {chunk.total_size} "
                    f"bytes; limit {max_bytes}"
                )
            parts.append(chunk.data)
            offset += len(chunk.data)
            if offset >= chunk.total_size:
                return b"".join(parts)
            if not chunk.data:
                raise AgentError(f"{self.machine}: signature of {basis_sha256} stalled at {offset}")

    async def begin_package_transfer(self, begin: TransferBegin) -> TransferState:
        """Open (or find the open) transfer of a package; the agent checks its disk first."""
        reply = await self._call(
            "BeginPackageTransfer",
            pb.BeginPackageTransferRequest(
                sha256=begin.sha256,
                package_id=begin.package_id,
                version=begin.version,
                size=begin.size,
                basis_sha256=begin.basis_sha256,
                transfer_size=begin.transfer_size,
                block_size=begin.block_size,
            ),
            pb.PackageTransferState,
            None,
        )
        return _transfer_state(reply)

    async def send_package_chunk(
        self, transfer_id: str, index: int, data: bytes, sha256: str | None = None
    ) -> TransferState:
        """Send chunk `index` with its SHA-256 (hashed here unless given); returns what is next."""
        reply = await self._call(
            "SendPackageChunk",
            pb.PackageChunkRequest(
                transfer_id=transfer_id,
                index=index,
                data=data,
                sha256=sha256 if sha256 is not None else hashlib.sha256(data).hexdigest(),
            ),
            pb.PackageTransferState,
            None,
        )
        return _transfer_state(reply)

    async def commit_package_transfer(self, transfer_id: str) -> str:
        """Have the agent verify and cache the package; returns why it did not, or ""."""
        reply = await self._call(
            "CommitPackageTransfer",
            pb.CommitPackageTransferRequest(transfer_id=transfer_id),
            pb.CommitPackageTransferResult,
            None,
        )
        if reply.cached:
            return ""
        return reply.failure or "the agent did not cache the package and gave no reason"

    async def close(self) -> None:
        """Release the transport."""
        await self.transport.close()


def _transfer_state(reply: pb.PackageTransferState) -> TransferState:
    return TransferState(
        transfer_id=reply.transfer_id,
        next_chunk=reply.next_chunk,
        received_bytes=reply.received_bytes,
        rejected=reply.rejected,
    )

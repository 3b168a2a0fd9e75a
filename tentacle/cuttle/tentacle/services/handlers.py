"""The Tentacle's request handlers, shared by the listening server and the polling client."""

from __future__ import annotations

import asyncio
import contextlib
import platform
import shutil
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from google.protobuf.message import DecodeError, Message

from cuttle.protocol.v1 import tentacle_pb2 as pb
from cuttle.tentacle.errors import BadRequest, NotFound, TentacleError
from cuttle.tentacle.execution import model
from cuttle.tentacle.execution.errors import ExecutionError, InvalidScript, UnknownTicket
from cuttle.tentacle.execution.manager import ScriptManager
from cuttle.tentacle.files.transfer import UploadStore, read_open_chunk
from cuttle.tentacle.packages.receive import PackageReceiver, TransferState
from cuttle.tentacle.services import convert

# Chunks larger than this are refused: they would not fit the gRPC message limit with headroom.
MAX_CHUNK_BYTES = 4 * 1024 * 1024
# Bounds one CompleteScripts call (and the time it holds the agent busy).
MAX_COMPLETE_TICKETS = 1000


def tentacle_version() -> str:
    """The installed cuttle-tentacle version."""
    try:
        return metadata.version("cuttle-tentacle")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class TentacleHandlers:
    """One async method per TentacleService RPC, taking and returning protobuf messages."""

    def __init__(
        self,
        manager: ScriptManager,
        uploads: UploadStore,
        packages: PackageReceiver,
        *,
        thumbprint: str,
        comms_style: str,
        disk_path: str,
    ) -> None:
        self._manager = manager
        self._uploads = uploads
        self._packages = packages
        self._thumbprint = thumbprint
        self._comms_style = comms_style
        self._disk_path = disk_path

    async def get_info(self, request: pb.GetInfoRequest) -> pb.TentacleInfo:
        """Describe this agent for health checks."""
        usage = shutil.disk_usage(self._disk_path)
        return pb.TentacleInfo(
            version=tentacle_version(),
            os=f"{platform.system()} {platform.release()} ({platform.machine()})",
            hostname=socket.gethostname(),
            free_disk_bytes=usage.free,
            thumbprint=self._thumbprint,
            comms_style=self._comms_style,
            python_version=sys.version.split()[0],
        )

    async def start_script(self, request: pb.StartScriptRequest) -> pb.ScriptStatus:
        """Start (or find the already started) script of a ticket."""
        return convert.script_status(await self._start(request))

    async def _start(self, request: pb.StartScriptRequest) -> model.ScriptSnapshot:
        try:
            files: list[model.ScriptFile] = []
            for file in request.files:
                content = self._uploads.read(file.transfer_id) if file.transfer_id else file.content
                files.append(model.ScriptFile(file.name, content))
            return await self._manager.start(convert.start_command(request, tuple(files)))
        finally:
            # The workspace holds its own copy now (or the start failed and the server sends
            # the file again with a new transfer id): an upload is used once, never kept.
            for file in request.files:
                if file.transfer_id:
                    with contextlib.suppress(BadRequest):
                        self._uploads.discard(file.transfer_id)

    async def get_status(self, request: pb.ScriptTicketRequest) -> pb.ScriptStatus:
        """State and journal lines after a sequence."""
        snapshot = await self._manager.status(
            request.ticket, request.after_sequence, request.max_lines
        )
        return convert.script_status(snapshot)

    async def watch_script(self, request: pb.WatchScriptRequest) -> AsyncIterator[pb.ScriptStatus]:
        """Start the ticket if asked (idempotent), stream new lines, then the final state."""
        if request.HasField("start"):
            if request.start.ticket != request.ticket:
                raise BadRequest(
                    f"the start names ticket {request.start.ticket!r}, the watch {request.ticket!r}"
                )
            await self._start(request.start)  # the watch answers with what follows
        async for snapshot in self._manager.watch(request.ticket, request.after_sequence):
            yield convert.script_status(snapshot)

    async def cancel_script(self, request: pb.CancelScriptRequest) -> pb.ScriptStatus:
        """Kill the ticket's process tree and confirm."""
        reason = request.reason or "cancelled by the server"
        return convert.script_status(await self._manager.cancel(request.ticket, reason))

    async def complete_script(self, request: pb.ScriptTicketRequest) -> pb.ScriptStatus:
        """Forget a finished ticket and delete its workspace."""
        return convert.script_status(await self._manager.complete(request.ticket))

    async def complete_scripts(
        self, request: pb.CompleteScriptsRequest
    ) -> pb.CompleteScriptsResponse:
        """Forget several finished tickets; the unknown ones are reported, not an error."""
        if len(request.tickets) > MAX_COMPLETE_TICKETS:
            raise BadRequest(
                f"{len(request.tickets)} tickets in one CompleteScripts call; "
                f"at most {MAX_COMPLETE_TICKETS}"
            )
        for ticket in request.tickets:
            model.check_ticket(ticket)  # all or nothing: a malformed list completes none
        reply = pb.CompleteScriptsResponse()
        for ticket in dict.fromkeys(request.tickets):
            try:
                await self._manager.complete(ticket)
            except UnknownTicket:
                reply.unknown.append(ticket)
            else:
                reply.completed.append(ticket)
        return reply

    async def upload_chunk(self, request: pb.UploadChunkRequest) -> pb.UploadChunkResult:
        """Receive one chunk of an upload."""
        if len(request.data) > MAX_CHUNK_BYTES:
            raise BadRequest(f"chunk of {len(request.data)} bytes exceeds {MAX_CHUNK_BYTES}")
        received = self._uploads.write_chunk(request.transfer_id, request.offset, request.data)
        return pb.UploadChunkResult(received=received)

    async def commit_upload(self, request: pb.CommitUploadRequest) -> pb.CommitUploadResult:
        """Verify and keep a finished upload."""
        digest = self._uploads.commit(request.transfer_id, request.size, request.sha256)
        return pb.CommitUploadResult(size=request.size, sha256=digest)

    async def download_chunk(self, request: pb.DownloadChunkRequest) -> pb.DownloadChunkResult:
        """Send one chunk of a file in a ticket's workspace (artifacts)."""
        length = min(request.length or 1024 * 1024, MAX_CHUNK_BYTES)
        try:
            handle = self._manager.open_workspace_file(request.ticket, request.path)
        except OSError:
            raise NotFound(f"no file {request.path} in the workspace") from None
        with handle:
            data, total, digest = read_open_chunk(handle, request.path, request.offset, length)
        return pb.DownloadChunkResult(
            data=data,
            offset=request.offset,
            total_size=total,
            eof=request.offset + len(data) >= total,
            sha256=digest,
        )

    async def find_package(self, request: pb.FindPackageRequest) -> pb.FindPackageResult:
        """Whether a package is cached, else the best delta basis."""
        found = await asyncio.to_thread(self._packages.find, request.sha256, request.package_id)
        reply = pb.FindPackageResult(cached=found.cached, signature_size=found.signature_size)
        if found.basis is not None:
            reply.basis_sha256 = found.basis.sha256
            reply.basis_version = found.basis.version
            reply.basis_size = found.basis.size
        return reply

    async def get_package_signature(
        self, request: pb.PackageSignatureRequest
    ) -> pb.PackageSignatureChunk:
        """One piece of a cached package's delta signature."""
        data, total = await asyncio.to_thread(
            self._packages.signature_chunk, request.basis_sha256, request.offset, request.length
        )
        return pb.PackageSignatureChunk(data=data, total_size=total)

    async def begin_package_transfer(
        self, request: pb.BeginPackageTransferRequest
    ) -> pb.PackageTransferState:
        """Open (or resume) a package transfer once the cache has room for it."""
        state = await asyncio.to_thread(
            lambda: self._packages.begin(
                sha256=request.sha256,
                package_id=request.package_id,
                version=request.version,
                size=request.size,
                basis_sha256=request.basis_sha256,
                transfer_size=request.transfer_size,
                block_size=request.block_size,
            )
        )
        return _transfer_state(state)

    async def send_package_chunk(self, request: pb.PackageChunkRequest) -> pb.PackageTransferState:
        """Take one chunk of a package transfer (checked against its SHA-256)."""
        state = await asyncio.to_thread(
            self._packages.chunk, request.transfer_id, request.index, request.data, request.sha256
        )
        return _transfer_state(state)

    async def commit_package_transfer(
        self, request: pb.CommitPackageTransferRequest
    ) -> pb.CommitPackageTransferResult:
        """Verify a finished transfer and cache it, or say why it was discarded."""
        failure = await asyncio.to_thread(self._packages.commit, request.transfer_id)
        return pb.CommitPackageTransferResult(cached=not failure, failure=failure)


def _transfer_state(state: TransferState) -> pb.PackageTransferState:
    return pb.PackageTransferState(
        transfer_id=state.transfer_id,
        next_chunk=state.next_chunk,
        received_bytes=state.received_bytes,
        rejected=state.rejected,
    )


@dataclass(frozen=True)
class Method:
    """A TentacleService method as both transports see it."""

    name: str
    request_type: type[Message]
    streaming: bool
    bind: Callable[[TentacleHandlers], Callable[[Any], Any]]


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("GetInfo", pb.GetInfoRequest, False, lambda h: h.get_info),
        Method("StartScript", pb.StartScriptRequest, False, lambda h: h.start_script),
        Method("GetStatus", pb.ScriptTicketRequest, False, lambda h: h.get_status),
        Method("WatchScript", pb.WatchScriptRequest, True, lambda h: h.watch_script),
        Method("CancelScript", pb.CancelScriptRequest, False, lambda h: h.cancel_script),
        Method("CompleteScript", pb.ScriptTicketRequest, False, lambda h: h.complete_script),
        Method("CompleteScripts", pb.CompleteScriptsRequest, False, lambda h: h.complete_scripts),
        Method("UploadChunk", pb.UploadChunkRequest, False, lambda h: h.upload_chunk),
        Method("CommitUpload", pb.CommitUploadRequest, False, lambda h: h.commit_upload),
        Method("DownloadChunk", pb.DownloadChunkRequest, False, lambda h: h.download_chunk),
        Method("FindPackage", pb.FindPackageRequest, False, lambda h: h.find_package),
        Method(
            "GetPackageSignature",
            pb.PackageSignatureRequest,
            False,
            lambda h: h.get_package_signature,
        ),
        Method(
            "BeginPackageTransfer",
            pb.BeginPackageTransferRequest,
            False,
            lambda h: h.begin_package_transfer,
        ),
        Method("SendPackageChunk", pb.PackageChunkRequest, False, lambda h: h.send_package_chunk),
        Method(
            "CommitPackageTransfer",
            pb.CommitPackageTransferRequest,
            False,
            lambda h: h.commit_package_transfer,
        ),
    )
}


def describe_error(exc: BaseException) -> tuple[str, str]:
    """The wire error kind and message for an exception raised by a handler."""
    if isinstance(exc, TentacleError):
        return exc.kind, str(exc)
    if isinstance(exc, UnknownTicket):
        return "not_found", str(exc)
    if isinstance(exc, InvalidScript | ExecutionError):
        return "invalid_argument", str(exc)
    if isinstance(exc, DecodeError):
        # A polling request whose payload does not parse: the sender's fault, not ours.
        return "invalid_argument", f"malformed request: {exc}"
    return "internal", f"{type(exc).__name__}: {exc}"

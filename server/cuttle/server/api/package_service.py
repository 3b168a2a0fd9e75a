"""PackageService: the built-in feed over the admin API, authorized per space.

Pushing needs the package_push role (a build server's key; edit and administer include it),
listing needs view or package_push, deleting and pruning need edit. The feed does the rest
(packages/feed.py), audit events included.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from sqlalchemy.orm import Session

from cuttle.protocol.v1 import packages_pb2 as ppb
from cuttle.protocol.v1 import packages_pb2_grpc
from cuttle.server.api import access
from cuttle.server.api.access import Principal
from cuttle.server.errors import Conflict, FailedPrecondition, InvalidArgument, PermissionDenied
from cuttle.server.packages.feed import PackageFeed, PushEnd, PushHeader
from cuttle.server.store import documents as doc_store
from cuttle.server.store.packages import PackageRecord
from cuttle.server.store.transactions import Transactions

Context = grpc.aio.ServicerContext[Any, Any]


def package_message(record: PackageRecord) -> ppb.Package:
    """The wire form of a package version."""
    return ppb.Package(
        package_id=record.package_id,
        version=record.version,
        format=record.format,
        size=record.size,
        sha256=record.sha256,
        pushed_by=record.pushed_by,
        pushed_unix_ms=record.pushed_ms,
    )


class PackageService(packages_pb2_grpc.PackageServiceServicer):
    """Push, list, delete and prune packages of a space's built-in feed."""

    def __init__(self, tx: Transactions, feed: PackageFeed) -> None:
        self._tx = tx
        self._feed = feed

    async def _caller(self, space: str, roles: tuple[str, ...], action: str) -> Principal:
        caller = access.current()

        def space_id(session: Session) -> str:
            return doc_store.get_space(session, space or doc_store.DEFAULT_SPACE).id

        who = caller.in_space(await self._tx.read(space_id))
        if not any(who.can(role) for role in roles):
            raise PermissionDenied(f"{who.name!r} needs the {' or '.join(roles)} role to {action}")
        return who

    async def PushPackage(
        self, request_iterator: AsyncIterator[ppb.PushPackageRequest], context: Context
    ) -> ppb.PushPackageResponse:  # noqa: N802
        """Receive a header, then the file in chunks; store it if everything checks out."""
        first = await anext(aiter(request_iterator), None)
        if not isinstance(first, ppb.PushPackageRequest) or not first.HasField("header"):
            raise InvalidArgument("a push starts with its header (file name, size, SHA-256)")
        h = first.header
        who = await self._caller(h.space, ("package_push",), "push packages")

        async def chunks() -> AsyncIterator[bytes | PushEnd]:
            async for message in request_iterator:
                if not isinstance(message, ppb.PushPackageRequest):
                    raise InvalidArgument("a push message could not be read; nothing was stored")
                part = message.WhichOneof("part")
                if part == "chunk":
                    yield message.chunk
                elif part == "trailer":
                    yield PushEnd(message.trailer.sha256)
                else:
                    raise InvalidArgument("a push has one header, before its chunks")

        try:
            result = await self._feed.push(
                PushHeader(
                    space=h.space,
                    file_name=h.file_name,
                    package_id=h.package_id,
                    version=h.version,
                    size=h.size,
                    replace=h.replace,
                ),
                chunks(),
                who.name,
            )
        except (Conflict, FailedPrecondition):
            # Refused while the client still streams: ending the call now resets the stream
            # under its writes, and the client sees a bare "internal error" instead of why.
            # Reading what is left (discarded, bounded) lets the refusal arrive as sent.
            await _drain(request_iterator, _DRAIN_LIMIT_BYTES)
            raise
        return ppb.PushPackageResponse(
            package=package_message(result.record),
            replaced=result.replaced,
            stored_new_file=result.stored_new_file,
        )

    async def ListPackages(
        self, request: ppb.ListPackagesRequest, context: Context
    ) -> ppb.ListPackagesResponse:  # noqa: N802
        """A space's package versions, by id, newest version first."""
        await self._caller(request.space, ("view", "package_push"), "list packages")
        found = await self._feed.list(request.space, request.package_id)
        return ppb.ListPackagesResponse(packages=[package_message(r) for r in found])

    async def DeletePackage(
        self, request: ppb.DeletePackageRequest, context: Context
    ) -> ppb.Package:  # noqa: N802
        """Delete one version no release or snapshot recorded."""
        who = await self._caller(request.space, ("edit",), "delete packages")
        record = await self._feed.delete(
            request.space, request.package_id, request.version, who.name
        )
        return package_message(record)

    async def PrunePackages(
        self, request: ppb.PrunePackagesRequest, context: Context
    ) -> ppb.PrunePackagesResponse:  # noqa: N802
        """Remove (or on a dry run list) every version no release or snapshot recorded."""
        who = await self._caller(request.space, ("edit",), "prune packages")
        result = await self._feed.prune(request.space, who.name, dry_run=request.dry_run)
        return ppb.PrunePackagesResponse(
            removed=[package_message(r) for r in result.removed],
            kept=result.kept_referenced,
            freed_bytes=result.freed_bytes,
        )


# A refused push larger than this is cut off instead (its client may see a bare error).
_DRAIN_LIMIT_BYTES = 256 * 1024 * 1024


async def _drain(messages: AsyncIterator[ppb.PushPackageRequest], limit: int) -> None:
    """Read and discard the rest of a refused push, up to limit bytes."""
    seen = 0
    try:
        async for message in messages:
            seen += len(message.chunk) if isinstance(message, ppb.PushPackageRequest) else 0
            if seen > limit:
                return
    except Exception:  # noqa: BLE001 - the stream may already be broken; the refusal stands
        return

"""SpaceService: create, list, rename and delete spaces.

The admin interceptor lets only callers with full rights in (system administrators, or an
unrestricted administer grant in the default space), since a space is server-wide. Each change
is an event in the default space's audit trail: a deleted space has no trail left to hold it.
"""

from __future__ import annotations

from typing import Any

import grpc
from sqlalchemy.orm import Session

from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.protocol.v1 import model_pb2_grpc
from cuttle.server.api import access
from cuttle.server.encryption import Encryptor
from cuttle.server.errors import FailedPrecondition, ValidationFailed
from cuttle.server.model.kinds import DEFAULT_DOCUMENTS, KINDS
from cuttle.server.model.repository import ModelRepository
from cuttle.server.store import documents as doc_store
from cuttle.server.store import events
from cuttle.server.store import packages as package_store
from cuttle.server.store.documents import SpaceRecord
from cuttle.server.store.models import NAME_LENGTH
from cuttle.server.store.transactions import Transactions

Context = grpc.aio.ServicerContext[Any, Any]

# What ensure_defaults puts in every space: a space holding only these counts as empty.
_STARTING_DOCUMENTS = tuple(
    (k.name, spec.name) for spec in DEFAULT_DOCUMENTS for k in KINDS if isinstance(spec, k.model)
)


def space_message(record: SpaceRecord) -> mpb.Space:
    """The wire form of a space."""
    return mpb.Space(
        id=record.id,
        name=record.name,
        created_unix_ms=record.created_ms,
        is_default=record.is_default,
    )


def _name(value: str, field: str) -> str:
    name = value.strip()
    if not name:
        raise ValidationFailed([(field, "a space needs a name")])
    if len(name) > NAME_LENGTH:
        raise ValidationFailed([(field, f"at most {NAME_LENGTH} characters")])
    return name


def _audit(
    session: Session,
    actor: str,
    category: str,
    space: SpaceRecord,
    message: str,
    *,
    before: str | None,
    after: str | None,
) -> None:
    default = doc_store.get_space(session, doc_store.DEFAULT_SPACE)
    events.record(
        session,
        space_id=default.id,
        actor=actor,
        category=category,
        kind="space",
        document_id=space.id,
        document_name=space.name,
        message=message,
        details={"before": before, "after": after, "changed": ["name"]},
    )


def _describe(contents: dict[str, int]) -> str:
    return ", ".join(f"{count} {k.replace('_', ' ')}(s)" for k, count in sorted(contents.items()))


class SpaceService(model_pb2_grpc.SpaceServiceServicer):
    """Implements SpaceService over the store's space functions."""

    def __init__(self, tx: Transactions, encryptor: Encryptor) -> None:
        self._tx = tx
        self._encryptor = encryptor

    async def CreateSpace(self, request: mpb.CreateSpaceRequest, context: Context) -> mpb.Space:  # noqa: N802
        """A new space with the documents every space starts with."""
        name = _name(request.name, "name")
        actor = access.current().name

        def work(session: Session) -> mpb.Space:
            space = doc_store.create_space(session, name)
            ModelRepository(session, space, self._encryptor, actor).ensure_defaults()
            _audit(
                session,
                actor,
                "created",
                space,
                f"Created space {space.name}",
                before=None,
                after=space.name,
            )
            return space_message(space)

        return await self._tx.run(work)

    async def ListSpaces(
        self, request: mpb.ListSpacesRequest, context: Context
    ) -> mpb.ListSpacesResponse:  # noqa: N802
        """Every space, by name."""

        def work(session: Session) -> mpb.ListSpacesResponse:
            return mpb.ListSpacesResponse(
                spaces=[space_message(s) for s in doc_store.list_spaces(session)]
            )

        return await self._tx.read(work)

    async def RenameSpace(self, request: mpb.RenameSpaceRequest, context: Context) -> mpb.Space:  # noqa: N802
        """Rename a space other than the default one."""
        new_name = _name(request.new_name, "new_name")
        actor = access.current().name

        def work(session: Session) -> mpb.Space:
            before = doc_store.get_space(session, request.name)
            if before.is_default:
                # The server and machines find the default space by its name.
                raise FailedPrecondition(f"the default space {before.name!r} cannot be renamed")
            after = doc_store.rename_space(session, before.name, new_name)
            _audit(
                session,
                actor,
                "renamed",
                after,
                f"Renamed space {before.name} to {after.name}",
                before=before.name,
                after=after.name,
            )
            return space_message(after)

        return await self._tx.run(work)

    async def DeleteSpace(
        self, request: mpb.DeleteSpaceRequest, context: Context
    ) -> mpb.DeleteSpaceResponse:  # noqa: N802
        """Delete a space that holds nothing but what it started with."""
        actor = access.current().name

        def work(session: Session) -> None:
            # The row lock waits for, then blocks, writes into the space (PostgreSQL's foreign
            # keys share-lock it), so what is counted is what gets deleted.
            space = doc_store.get_space(session, request.name, for_update=True)
            if space.is_default:
                raise FailedPrecondition(f"the default space {space.name!r} cannot be deleted")
            contents = doc_store.space_contents(session, space.id, _STARTING_DOCUMENTS)
            # Package files outlive their rows only if a space's rows vanish by cascade.
            packages = package_store.count_in_space(session, space.id)
            if packages:
                contents["package_version"] = packages
            if contents:
                raise FailedPrecondition(
                    f"space {space.name!r} still holds {_describe(contents)}; "
                    "delete them first (cuttle apply --prune and cuttle package prune can)"
                )
            doc_store.delete_space(session, space.id)
            _audit(
                session,
                actor,
                "deleted",
                space,
                f"Deleted space {space.name}",
                before=space.name,
                after=None,
            )

        await self._tx.run(work)
        return mpb.DeleteSpaceResponse()

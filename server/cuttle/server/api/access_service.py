"""AccessService: API keys for users (and system keys), secrets shown once.

A key records the key its creator called with; revoking a key revokes every key created with
it, so containing a leaked key also contains whatever its holder minted. A user may create keys
for themselves only while they hold a role: a role-less user's key could do nothing but make
more keys, and keys parked that way would wake up the day the user is given a role.
"""

from __future__ import annotations

import contextlib
from typing import Any

import grpc
from sqlalchemy.orm import Session

from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.protocol.v1 import model_pb2_grpc
from cuttle.server.api import access
from cuttle.server.errors import InvalidArgument, NotFound, PermissionDenied
from cuttle.server.store import api_keys, events
from cuttle.server.store import documents as doc_store
from cuttle.server.store.documents import DocumentRecord
from cuttle.server.store.errors import NotFound as StoreNotFound
from cuttle.server.store.records import ApiKeyRecord
from cuttle.server.store.transactions import Transactions

Context = grpc.aio.ServicerContext[Any, Any]
SYSTEM_PERMISSIONS = frozenset({"admin", "machine:register"})


def _key(record: ApiKeyRecord, user: str) -> mpb.ApiKey:
    return mpb.ApiKey(
        id=record.id,
        name=record.name,
        prefix=record.prefix,
        user=user,
        created_unix_ms=record.created_ms,
        revoked=record.revoked,
        permissions=list(record.permissions),
        created_by_key_id=record.created_by_key_id or "",
    )


class AccessService(model_pb2_grpc.AccessServiceServicer):
    """Creates, lists and revokes API keys; administering keys needs the administer role."""

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    async def CreateApiKey(
        self, request: mpb.CreateApiKeyRequest, context: Context
    ) -> mpb.CreateApiKeyResponse:  # noqa: N802
        """A new key for a user (or a system key); the secret is in the reply, once."""
        caller = access.current()
        unknown = set(request.permissions) - SYSTEM_PERMISSIONS
        if unknown:
            raise InvalidArgument(
                f"unknown permission(s) {', '.join(sorted(unknown))}; system permissions are "
                f"{', '.join(sorted(SYSTEM_PERMISSIONS))} (users get roles through teams)"
            )
        if not request.user and not request.permissions:
            raise InvalidArgument("give the user the key acts as, or system permissions")

        def work(session: Session) -> mpb.CreateApiKeyResponse:
            user_id = None
            space_id: str | None = None
            who = caller
            if request.user:
                space = doc_store.get_space(session, request.space or doc_store.DEFAULT_SPACE)
                space_id = space.id
                who = caller.in_space(space.id)
                user = doc_store.find(session, space.id, "user", request.user)
                if user is None:
                    raise NotFound(f"user {request.user!r} was not found")
                user_id = user.id
                if user.id != who.user_id:
                    who.require("administer", action=f"create API keys for {user.name!r}")
                elif not who.grants and not who.system_permissions:
                    raise PermissionDenied(
                        f"{user.name!r} holds no role in any team, so a key for it could do "
                        "nothing but make more keys; an administrator adds the user to a team "
                        "first (or creates the key for them)"
                    )
            if request.permissions and not who.is_system_admin:
                raise PermissionDenied(
                    "only a system administrator key may create keys with system permissions"
                )
            record, secret = api_keys.create(
                session,
                request.name or "api key",
                list(request.permissions),
                user_id=user_id,
                created_by_key_id=caller.key_id or None,
            )
            for_whom = f"user {request.user}" if request.user else "the server"
            _audit(
                session,
                caller,
                "api key created",
                record,
                f"Created API key {record.name!r} ({record.prefix}...) for {for_whom}",
                space_id=space_id,
            )
            return mpb.CreateApiKeyResponse(key=_key(record, request.user), secret=secret)

        return await self._tx.run(work)

    async def ListApiKeys(
        self, request: mpb.ListApiKeysRequest, context: Context
    ) -> mpb.ListApiKeysResponse:  # noqa: N802
        """Keys (never their secrets), optionally of one user."""
        caller = access.current()

        def work(session: Session) -> mpb.ListApiKeysResponse:
            space = doc_store.get_space(session, request.space or doc_store.DEFAULT_SPACE)
            who = caller.in_space(space.id)
            user_id = None
            if request.user:
                user = doc_store.find(session, space.id, "user", request.user)
                if user is None:
                    raise NotFound(f"user {request.user!r} was not found")
                user_id = user.id
            if request.user != who.name:
                who.require("administer", action="list other users' API keys")
            records = api_keys.list_keys(session, user_id)
            if not who.has_full_rights:
                # A space's administrators see the keys of that space's users only; the keys
                # made by `cuttle-server init` (no user) and other spaces' are not theirs.
                members = {u.id for u in doc_store.all_of_kind(session, space.id, "user")}
                records = [r for r in records if r.user_id in members]
            names = doc_store.names_by_id(session, {r.user_id for r in records if r.user_id})
            return mpb.ListApiKeysResponse(
                keys=[
                    _key(r, names.get(r.user_id, ("", ""))[1] if r.user_id else "") for r in records
                ]
            )

        return await self._tx.run(work)

    async def RevokeApiKey(self, request: mpb.RevokeApiKeyRequest, context: Context) -> mpb.ApiKey:  # noqa: N802
        """Revoke a key and the keys created with it; effective within the key cache time (5 s)."""
        caller = access.current()

        def work(session: Session) -> mpb.ApiKey:
            owner = _authorize_revoke(session, caller, api_keys.get(session, request.id))
            revoked = api_keys.revoke(session, request.id)
            _audit_revoked(session, caller, [revoked])
            return _key(revoked, owner.name if owner else "")

        return await self._tx.run(work)

    async def RevokeApiKeys(
        self, request: mpb.RevokeApiKeysRequest, context: Context
    ) -> mpb.RevokeApiKeysResponse:  # noqa: N802
        """Revoke one key or all of a user's, with every key created with them, and list them."""
        caller = access.current()
        if bool(request.id) == bool(request.user):
            raise InvalidArgument("give either a key id or a user whose keys to revoke")

        def work(session: Session) -> mpb.RevokeApiKeysResponse:
            if request.id:
                _authorize_revoke(session, caller, api_keys.get(session, request.id))
                roots = [request.id]
            else:
                space = doc_store.get_space(session, request.space or doc_store.DEFAULT_SPACE)
                user = doc_store.find(session, space.id, "user", request.user)
                if user is None:
                    raise NotFound(f"user {request.user!r} was not found")
                if user.id != caller.user_id:
                    caller.in_space(space.id).require(
                        "administer", action=f"revoke the API keys of {user.name!r}"
                    )
                roots = api_keys.keys_of_user(session, user.id)
            # Keys created with these go too, whoever they act as: that is the containment.
            records = api_keys.revoke_with_descendants(session, roots) if roots else []
            _audit_revoked(session, caller, records)
            names = doc_store.names_by_id(session, {r.user_id for r in records if r.user_id})
            return mpb.RevokeApiKeysResponse(
                revoked=[
                    _key(r, names.get(r.user_id, ("", ""))[1] if r.user_id else "") for r in records
                ]
            )

        return await self._tx.run(work)


def _authorize_revoke(
    session: Session, caller: access.Principal, key: ApiKeyRecord
) -> DocumentRecord | None:
    """The key's owner (a user document, or None); raise PermissionDenied if caller may not."""
    owner: DocumentRecord | None = None
    if key.user_id:
        with contextlib.suppress(NotFound, StoreNotFound):
            owner = doc_store.get(session, key.user_id)
    # Anyone may revoke their own keys: containing a leak should not wait for an administrator.
    if owner is not None and owner.id == caller.user_id:
        return owner
    # A space's administrators revoke the keys of that space's users. A key made by
    # `cuttle-server init` (or one whose user is gone) belongs to no space: only full
    # rights may revoke it.
    who = caller.in_space(owner.space_id if owner is not None else "")
    who.require("administer", action="revoke API keys")
    return owner


def _audit(
    session: Session,
    caller: access.Principal,
    category: str,
    key: ApiKeyRecord,
    message: str,
    *,
    space_id: str | None,
) -> None:
    """A key's event: in its user's space, or the default space for system keys."""
    if space_id is None:
        space_id = doc_store.get_space(session, doc_store.DEFAULT_SPACE).id
    events.record(
        session,
        space_id=space_id,
        actor=caller.name,
        category=category,
        kind="api_key",
        document_id=key.id,
        document_name=key.name,
        # The prefix identifies the key to its holder; the secret is never kept, let alone here.
        message=message,
        details={"key_id": key.id, "prefix": key.prefix, "permissions": list(key.permissions)},
    )


def _audit_revoked(session: Session, caller: access.Principal, records: list[ApiKeyRecord]) -> None:
    """One event per revoked key, in the space of the user it acted as."""
    for record in records:
        space_id: str | None = None
        if record.user_id:
            with contextlib.suppress(NotFound, StoreNotFound):
                space_id = doc_store.get(session, record.user_id).space_id
        _audit(
            session,
            caller,
            "api key revoked",
            record,
            f"Revoked API key {record.name!r} ({record.prefix}...)",
            space_id=space_id,
        )

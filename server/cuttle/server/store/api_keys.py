"""API keys: created once with their secret shown once; only a SHA-256 of the secret is kept.

Each key remembers the key its creator called with. Revoking a key revokes every key created
with it, transitively: a leaked key's holder may have minted more, and those must go with it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import uuid
from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cuttle.server.store.errors import InvalidArgument, NotFound
from cuttle.server.store.models import NAME_LENGTH, ApiKey
from cuttle.server.store.records import ApiKeyRecord, now_ms

KEY_PREFIX = "CUTTLE-"
SECRET_LENGTH = 40
DISPLAY_PREFIX_LENGTH = 8
_URL_SAFE_ALPHABET = string.ascii_letters + string.digits + "-_"


def hash_key(plaintext: str) -> str:
    """Return the SHA-256 hex digest under which a key is stored."""
    # A plain hash suffices (no salt, no slow KDF): the secret is 240 random bits, not a
    # password, so there is nothing to guess or precompute.
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def _display_prefix(plaintext: str) -> str:
    # The first characters of the random part: "CUTTLE-" alone would tell keys apart by nothing.
    return plaintext[len(KEY_PREFIX) : len(KEY_PREFIX) + DISPLAY_PREFIX_LENGTH]


def _record(row: ApiKey) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        permissions=tuple(row.permissions),
        created_ms=row.created_ms,
        revoked=row.revoked,
        user_id=row.user_id,
        created_by_key_id=row.created_by_key_id,
    )


def create(
    session: Session,
    name: str,
    permissions: Sequence[str],
    *,
    created_ms: int | None = None,
    user_id: str | None = None,
    created_by_key_id: str | None = None,
) -> tuple[ApiKeyRecord, str]:
    """Create a key; return its record and the plaintext key, which is never available again."""
    if not name.strip() or len(name) > NAME_LENGTH:
        raise InvalidArgument(f"API key name {name!r} must be 1-{NAME_LENGTH} characters")
    plaintext = KEY_PREFIX + "".join(
        secrets.choice(_URL_SAFE_ALPHABET) for _ in range(SECRET_LENGTH)
    )
    row = ApiKey(
        id=uuid.uuid4().hex,
        name=name,
        key_hash=hash_key(plaintext),
        prefix=_display_prefix(plaintext),
        permissions=list(permissions),
        created_ms=now_ms() if created_ms is None else created_ms,
        revoked=False,
        user_id=user_id,
        created_by_key_id=created_by_key_id,
    )
    session.add(row)
    session.flush()
    return _record(row), plaintext


def verify(session: Session, plaintext: str) -> ApiKeyRecord | None:
    """Return the unrevoked key whose secret is plaintext, or None."""
    if not plaintext.startswith(KEY_PREFIX) or len(plaintext) != len(KEY_PREFIX) + SECRET_LENGTH:
        return None
    presented = hash_key(plaintext)
    candidates = session.scalars(
        select(ApiKey).where(ApiKey.prefix == _display_prefix(plaintext))
    ).all()
    match: ApiKey | None = None
    for row in candidates:
        # Constant time, and over every candidate: how long this takes says nothing about how
        # much of the key was right.
        if hmac.compare_digest(row.key_hash, presented):
            match = row
    if match is None or match.revoked:
        return None
    return _record(match)


def list_keys(session: Session, user_id: str | None = None) -> list[ApiKeyRecord]:
    """Return every key (or one user's), revoked ones included, oldest first."""
    query = select(ApiKey).order_by(ApiKey.created_ms, ApiKey.id)
    if user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
    rows = session.scalars(query).all()
    return [_record(row) for row in rows]


def get(session: Session, key_id: str) -> ApiKeyRecord:
    """The key with this id, or raise NotFound."""
    row = session.get(ApiKey, key_id)
    if row is None:
        raise NotFound("API key", key_id)
    return _record(row)


def revoke(session: Session, key_id: str) -> ApiKeyRecord:
    """Revoke the key and every key created with it (twice is harmless), or raise NotFound."""
    return revoke_with_descendants(session, [key_id])[0]


def keys_of_user(session: Session, user_id: str) -> list[str]:
    """The ids of every key acting as this user, revoked ones included, oldest first."""
    query = select(ApiKey.id).where(ApiKey.user_id == user_id)
    return list(session.scalars(query.order_by(ApiKey.created_ms, ApiKey.id)).all())


def revoke_with_descendants(session: Session, key_ids: Sequence[str]) -> list[ApiKeyRecord]:
    """Revoke these keys and, transitively, every key created with them; return them all.

    The named keys come first, then the keys created with them, generation by generation.
    Raise NotFound, revoking nothing, if a named key does not exist.
    """
    roots = list(dict.fromkeys(key_ids))
    found = set(session.scalars(select(ApiKey.id).where(ApiKey.id.in_(roots))).all())
    missing = [key_id for key_id in roots if key_id not in found]
    if missing:
        raise NotFound("API key", missing[0])
    order = list(roots)
    seen = set(roots)
    generation = roots
    # Breadth first over created_by_key_id; already revoked keys are walked too, so a key made
    # with a key that was revoked before lineage reached it is still found.
    while generation:
        children = [
            child
            for child in session.scalars(
                select(ApiKey.id)
                .where(ApiKey.created_by_key_id.in_(generation))
                .order_by(ApiKey.created_ms, ApiKey.id)
            ).all()
            if child not in seen
        ]
        seen.update(children)
        order.extend(children)
        generation = children
    session.execute(
        update(ApiKey)
        .where(ApiKey.id.in_(order))
        .values(revoked=True)
        .execution_options(synchronize_session="fetch")
    )
    session.flush()
    rows = {row.id: row for row in session.scalars(select(ApiKey).where(ApiKey.id.in_(order)))}
    return [_record(rows[key_id]) for key_id in order]

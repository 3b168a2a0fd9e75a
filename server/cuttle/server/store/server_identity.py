"""The server identity shared by every node of one database: certificate plus sealed key."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cuttle.protocol import pki
from cuttle.server.encryption import Encryptor
from cuttle.server.store.models import ServerIdentityRow
from cuttle.server.store.records import now_ms

# Authenticated data for the sealed key: a ciphertext of a variable cannot pass for it.
_SEAL_NAME = "@server-identity-key"


def load(session: Session, encryptor: Encryptor) -> pki.Identity | None:
    """The stored identity, or None before `init` (or before an upgraded home's first start)."""
    row = session.get(ServerIdentityRow, 1)
    if row is None:
        return None
    key_pem = encryptor.decrypt(row.key_ciphertext, _SEAL_NAME)
    return pki.Identity(key_pem=key_pem.encode(), certificate_pem=row.certificate_pem.encode())


def stored_thumbprint(session: Session) -> str | None:
    """The thumbprint of the stored identity, readable without the master key."""
    return session.scalar(select(ServerIdentityRow.thumbprint).where(ServerIdentityRow.id == 1))


def store(session: Session, encryptor: Encryptor, identity: pki.Identity) -> pki.Identity:
    """Store identity unless one is there already; return the one that is stored now."""
    row = ServerIdentityRow(
        id=1,
        thumbprint=identity.thumbprint,
        certificate_pem=identity.certificate_pem.decode(),
        key_ciphertext=encryptor.encrypt(identity.key_pem.decode(), _SEAL_NAME),
        created_ms=now_ms(),
    )
    try:
        # Two nodes of an upgraded home starting at once: the first one's identity wins.
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        pass
    found = load(session, encryptor)
    if found is None:  # pragma: no cover - the row was just added or exists
        raise RuntimeError("the server identity vanished while it was being stored")
    return found

"""Registered machines for store and engine tests: one way to add a row, not one per file."""

from __future__ import annotations

import hashlib

from sqlalchemy.orm import Session

from cuttle.server.store import machines
from cuttle.server.store.records import CommsStyle, MachineRecord

# The store keeps the PEM as given; these tests never open a connection with it.
PLACEHOLDER_PEM = "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"


def add_machine(
    session: Session,
    name: str,
    *,
    style: CommsStyle = "polling",
    endpoint: str | None = None,
    seed: str = "",
    replace: bool = False,
) -> MachineRecord:
    """Register ``name`` in Dev, with a thumbprint derived from ``seed`` (default: the name)."""
    return machines.add(
        session,
        name=name,
        comms_style=style,
        endpoint=endpoint,
        thumbprint=hashlib.sha256((seed or name).encode()).hexdigest().upper(),
        certificate_pem=PLACEHOLDER_PEM,
        environments=("Dev",),
        replace=replace,
    )

"""Machines (deployment targets): registration, lookup by name or thumbprint, health."""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Sequence

from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from cuttle.server.domain.plan import BUILTIN_WORKER
from cuttle.server.store.errors import Conflict, InvalidArgument, NotFound
from cuttle.server.store.models import NAME_LENGTH, Machine
from cuttle.server.store.records import (
    COMMS_STYLES,
    HEALTHS,
    CommsStyle,
    Health,
    MachineRecord,
    Page,
    now_ms,
)

_THUMBPRINT = re.compile(r"[0-9A-F]{64}")
MAX_PAGE_SIZE = 1000


def name_key(name: str) -> str:
    """Return the case-insensitive key under which a machine name is unique."""
    return name.casefold()


def normalize_thumbprint(thumbprint: str) -> str:
    """Return thumbprint as 64 upper-case hex digits, or raise InvalidArgument."""
    normalized = thumbprint.strip().replace(":", "").upper()
    if not _THUMBPRINT.fullmatch(normalized):
        raise InvalidArgument(
            f"thumbprint {thumbprint!r} is not a SHA-256 fingerprint (64 hex digits)"
        )
    return normalized


def _check_name(name: str) -> None:
    if not name.strip() or len(name) > NAME_LENGTH or name != name.strip():
        raise InvalidArgument(
            f"machine name {name!r} must be 1-{NAME_LENGTH} characters without surrounding spaces"
        )
    if name.casefold() == BUILTIN_WORKER:
        raise InvalidArgument(f"machine name {name!r} is reserved for the server's own worker")


def _record(row: Machine) -> MachineRecord:
    return MachineRecord(
        id=row.id,
        name=row.name,
        comms_style=_comms_style(row.comms_style),
        endpoint=row.endpoint,
        thumbprint=row.thumbprint,
        certificate_pem=row.certificate_pem,
        environments=tuple(row.environments),
        roles=tuple(row.roles),
        health=_health(row.health),
        health_message=row.health_message,
        tentacle_version=row.tentacle_version,
        os=row.os,
        free_disk_bytes=row.free_disk_bytes,
        last_health_check_ms=row.last_health_check_ms,
        registered_ms=row.registered_ms,
        enabled=row.enabled,
        tenants=tuple(row.tenants or ()),
        tenant_tags=tuple(row.tenant_tags or ()),
        tenanted_mode=row.tenanted_mode or "untenanted",
        policy=row.policy,
        unreachable_since_ms=row.unreachable_since_ms,
    )


def _comms_style(value: str) -> CommsStyle:
    for style in COMMS_STYLES:
        if style == value:
            return style
    raise InvalidArgument(f"comms style {value!r} is not one of {', '.join(COMMS_STYLES)}")


def _health(value: str) -> Health:
    for health in HEALTHS:
        if health == value:
            return health
    raise InvalidArgument(f"health {value!r} is not one of {', '.join(HEALTHS)}")


def add(
    session: Session,
    *,
    name: str,
    comms_style: CommsStyle,
    endpoint: str | None,
    thumbprint: str,
    certificate_pem: str,
    environments: Sequence[str] = (),
    roles: Sequence[str] = (),
    replace: bool = False,
    registered_ms: int | None = None,
) -> MachineRecord:
    """Register a machine; with replace=True, re-register the same-named one (new certificate)."""
    _check_name(name)
    style = _comms_style(comms_style)
    if style == "listening" and not endpoint:
        raise InvalidArgument(f"listening machine {name!r} needs an endpoint (host:port)")
    thumbprint = normalize_thumbprint(thumbprint)
    key = name_key(name)
    same_name = session.scalars(select(Machine).where(Machine.name_key == key)).one_or_none()
    same_cert = session.scalars(
        select(Machine).where(Machine.thumbprint == thumbprint)
    ).one_or_none()
    if same_cert is not None and (same_name is None or same_cert.id != same_name.id):
        # Even on replace: one certificate identifies one machine, or a thumbprint would not
        # say which machine is calling.
        raise Conflict(
            f"the certificate {thumbprint} is already registered to machine {same_cert.name!r}"
        )
    if same_name is not None and not replace:
        raise Conflict(
            f"a machine named {same_name.name!r} is already registered"
            " (re-register with `tentacle register-with --force` to give it a new certificate)"
        )
    try:
        # A savepoint, so that losing a race to another registration leaves the caller's
        # transaction usable (PostgreSQL aborts the whole transaction on an error otherwise).
        # The changes are made inside it: begin_nested() flushes what is pending first, and a
        # change flushed before the SAVEPOINT would not be undone by it.
        with session.begin_nested():
            if same_name is not None:
                row = same_name
                row.name = name
                row.comms_style = style
                row.endpoint = endpoint
                row.thumbprint = thumbprint
                row.certificate_pem = certificate_pem
                row.environments = list(environments)
                row.roles = list(roles)
                # A new certificate may be a new Tentacle: what we knew about the old one is stale.
                row.health = "unknown"
                row.health_message = ""
                row.unreachable_since_ms = None
            else:
                row = Machine(
                    id=uuid.uuid4().hex,
                    name=name,
                    name_key=key,
                    comms_style=style,
                    endpoint=endpoint,
                    thumbprint=thumbprint,
                    certificate_pem=certificate_pem,
                    environments=list(environments),
                    roles=list(roles),
                    health="unknown",
                    health_message="",
                    tentacle_version="",
                    os="",
                    free_disk_bytes=None,
                    last_health_check_ms=None,
                    registered_ms=now_ms() if registered_ms is None else registered_ms,
                    enabled=True,
                )
                session.add(row)
            session.flush()
    except IntegrityError as error:
        raise Conflict(
            f"machine {name!r} or certificate {thumbprint} was registered concurrently"
        ) from error
    return _record(row)


def get_by_name(session: Session, name: str) -> MachineRecord:
    """Return the machine called name (any case), or raise NotFound."""
    row = session.scalars(select(Machine).where(Machine.name_key == name_key(name))).one_or_none()
    if row is None:
        raise NotFound("machine", name)
    return _record(row)


def find_by_thumbprint(session: Session, thumbprint: str) -> MachineRecord | None:
    """Return the machine whose certificate has this thumbprint, if any."""
    try:
        normalized = normalize_thumbprint(thumbprint)
    except InvalidArgument:
        return None
    row = session.scalars(select(Machine).where(Machine.thumbprint == normalized)).one_or_none()
    return None if row is None else _record(row)


def get_by_thumbprint(session: Session, thumbprint: str) -> MachineRecord:
    """Return the machine whose certificate has this thumbprint, or raise NotFound."""
    record = find_by_thumbprint(session, thumbprint)
    if record is None:
        raise NotFound("machine with thumbprint", thumbprint)
    return record


def _any_of(
    session: Session, column: InstrumentedAttribute[list[str]], wanted: Collection[str]
) -> ColumnElement[bool]:
    # The JSON list holds at least one of wanted. Both dialects expand a JSON array into a
    # table with a "value" column, under different names.
    dialect = session.get_bind().dialect.name
    function = "json_each" if dialect == "sqlite" else "json_array_elements_text"
    elements = getattr(func, function)(column).table_valued("value")
    return exists(select(1).select_from(elements).where(elements.c.value.in_(sorted(wanted))))


def list_machines(
    session: Session,
    *,
    environments: Collection[str] = (),
    roles: Collection[str] = (),
    names: Collection[str] = (),
    page_size: int = 100,
    page_token: str | None = None,
) -> Page[MachineRecord]:
    """List machines by name; each non-empty filter keeps machines matching any of its values."""
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page size {page_size} is not between 1 and {MAX_PAGE_SIZE}")
    query = select(Machine)
    if environments:
        query = query.where(_any_of(session, Machine.environments, environments))
    if roles:
        query = query.where(_any_of(session, Machine.roles, roles))
    if names:
        query = query.where(Machine.name_key.in_(sorted({name_key(n) for n in names})))
    if page_token:
        query = query.where(Machine.name_key > name_key(page_token))
    # One extra row says whether another page follows, without a COUNT.
    rows = session.scalars(query.order_by(Machine.name_key).limit(page_size + 1)).all()
    items = tuple(_record(row) for row in rows[:page_size])
    next_token = items[-1].name if len(rows) > page_size else None
    return Page(items=items, next_page_token=next_token)


def remove(session: Session, name: str) -> MachineRecord:
    """Remove the machine called name and return what it was, or raise NotFound."""
    row = session.scalars(select(Machine).where(Machine.name_key == name_key(name))).one_or_none()
    if row is None:
        raise NotFound("machine", name)
    record = _record(row)
    session.delete(row)
    session.flush()
    return record


def update_health(
    session: Session,
    name: str,
    *,
    health: Health,
    message: str = "",
    tentacle_version: str | None = None,
    os: str | None = None,
    free_disk_bytes: int | None = None,
    checked_ms: int | None = None,
    unreachable_since_ms: int | None = None,
) -> MachineRecord:
    """Record the outcome of a health check; a None fact leaves what we knew unchanged.

    unreachable_since_ms is the start of the run of failed checks this one belongs to (None:
    the check succeeded), so it is always written.
    """
    row = session.scalars(select(Machine).where(Machine.name_key == name_key(name))).one_or_none()
    if row is None:
        raise NotFound("machine", name)
    row.health = _health(health)
    row.health_message = message
    row.unreachable_since_ms = unreachable_since_ms
    if tentacle_version is not None:
        row.tentacle_version = tentacle_version
    if os is not None:
        row.os = os
    if free_disk_bytes is not None:
        row.free_disk_bytes = free_disk_bytes
    row.last_health_check_ms = now_ms() if checked_ms is None else checked_ms
    session.flush()
    return _record(row)


def set_enabled(session: Session, name: str, enabled: bool) -> MachineRecord:
    """Enable or disable a machine (a disabled one receives no work)."""
    row = session.scalars(select(Machine).where(Machine.name_key == name_key(name))).one_or_none()
    if row is None:
        raise NotFound("machine", name)
    row.enabled = enabled
    session.flush()
    return _record(row)


TENANTED_MODES = ("untenanted", "tenanted", "tenanted_or_untenanted")


def update(
    session: Session,
    name: str,
    *,
    environments: Sequence[str] | None = None,
    roles: Sequence[str] | None = None,
    tenants: Sequence[str] | None = None,
    tenant_tags: Sequence[str] | None = None,
    tenanted_mode: str | None = None,
    enabled: bool | None = None,
    policy: str | None = None,
) -> MachineRecord:
    """Change what a person may change about a machine (None leaves a field as it is)."""
    row = session.scalars(select(Machine).where(Machine.name_key == name_key(name))).one_or_none()
    if row is None:
        raise NotFound("machine", name)
    if environments is not None:
        if not environments:
            raise InvalidArgument(f"machine {row.name!r} needs at least one environment")
        row.environments = _distinct(environments)
    if roles is not None:
        row.roles = _distinct(roles)
    if tenants is not None:
        row.tenants = _distinct(tenants)
    if tenant_tags is not None:
        row.tenant_tags = _distinct(tenant_tags)
    if tenanted_mode is not None:
        if tenanted_mode not in TENANTED_MODES:
            raise InvalidArgument(
                f"tenanted mode {tenanted_mode!r} is not one of {', '.join(TENANTED_MODES)}"
            )
        row.tenanted_mode = tenanted_mode
    if enabled is not None:
        row.enabled = enabled
    if policy is not None:
        row.policy = policy or None
    session.flush()
    return _record(row)


def _distinct(values: Sequence[str]) -> list[str]:
    # Case-insensitive like every name; the first spelling is kept.
    seen: dict[str, str] = {}
    for value in values:
        if not value.strip():
            raise InvalidArgument("names must not be empty")
        seen.setdefault(value.casefold(), value)
    return list(seen.values())


def trusted_certificates(
    session: Session, comms_style: CommsStyle | None = None
) -> list[tuple[str, str]]:
    """Return (thumbprint, certificate PEM) of every registered machine, optionally of one style."""
    query = select(Machine.thumbprint, Machine.certificate_pem).order_by(Machine.thumbprint)
    if comms_style is not None:
        query = query.where(Machine.comms_style == _comms_style(comms_style))
    return [(thumbprint, pem) for thumbprint, pem in session.execute(query).all()]


def names_for(session: Session, names: Collection[str]) -> dict[str, str]:
    """Map each given name (any case) that exists to the machine's stored spelling."""
    if not names:
        return {}
    keys = {name_key(n): n for n in names}
    rows = session.execute(
        select(Machine.name_key, Machine.name).where(Machine.name_key.in_(sorted(keys)))
    ).all()
    return {keys[key]: name for key, name in rows}


def all_machines(
    session: Session,
    *,
    environments: Collection[str] = (),
    roles: Collection[str] = (),
    names: Collection[str] = (),
) -> list[MachineRecord]:
    """Every machine matching the filters, read page by page."""
    found: list[MachineRecord] = []
    token: str | None = None
    while True:
        page = list_machines(
            session,
            environments=environments,
            roles=roles,
            names=names,
            page_size=MAX_PAGE_SIZE,
            page_token=token,
        )
        found.extend(page.items)
        token = page.next_page_token
        if token is None:
            return found

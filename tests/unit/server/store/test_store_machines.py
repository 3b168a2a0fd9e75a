"""Machines: registration, conflicts, re-registration, lookups, filters and paging."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy.orm import Session, sessionmaker

from cuttle.server.store import machines
from cuttle.server.store.errors import Conflict, InvalidArgument, NotFound
from cuttle.server.store.records import CommsStyle, MachineRecord


def thumbprint_of(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest().upper()


def register(
    session: Session,
    name: str,
    *,
    seed: str | None = None,
    style: CommsStyle = "listening",
    environments: tuple[str, ...] = ("Production",),
    roles: tuple[str, ...] = ("web",),
    replace: bool = False,
) -> MachineRecord:
    return machines.add(
        session,
        name=name,
        comms_style=style,
        endpoint=f"{name.lower()}.example:10933" if style == "listening" else None,
        thumbprint=thumbprint_of(seed or name),
        certificate_pem=f"-----BEGIN CERTIFICATE-----\n{seed or name}\n-----END CERTIFICATE-----\n",
        environments=environments,
        roles=roles,
        replace=replace,
        registered_ms=1_700_000_000_000,
    )


def test_add_then_get_by_name_and_thumbprint(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        added = register(session, "Web-1", environments=("Test", "Production"), roles=("web",))
    with sessions.begin() as session:
        by_name = machines.get_by_name(session, "web-1")
        by_thumbprint = machines.get_by_thumbprint(session, added.thumbprint.lower())
    assert by_name == added == by_thumbprint
    assert added.name == "Web-1"
    assert added.environments == ("Test", "Production")
    assert added.health == "unknown"
    assert added.enabled
    assert added.registered_ms == 1_700_000_000_000


def test_names_are_unique_regardless_of_case(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        register(session, "Web-1")
    with sessions.begin() as session, pytest.raises(Conflict, match="'Web-1'"):
        register(session, "WEB-1", seed="other certificate")


def test_a_certificate_identifies_one_machine(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        register(session, "Web-1", seed="shared")
    with sessions.begin() as session, pytest.raises(Conflict, match="'Web-1'"):
        register(session, "Web-2", seed="shared", replace=True)


def test_conflict_leaves_the_transaction_usable(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        register(session, "Web-1")
        with pytest.raises(Conflict):
            register(session, "web-1", seed="other")
        register(session, "Web-2")
    with sessions.begin() as session:
        page = machines.list_machines(session)
    assert [m.name for m in page.items] == ["Web-1", "Web-2"]


def test_replace_gives_the_same_machine_a_new_certificate(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        old = register(session, "Web-1", seed="old")
        machines.update_health(session, "Web-1", health="healthy", checked_ms=5)
    with sessions.begin() as session:
        new = register(session, "web-1", seed="new", roles=("api",), replace=True)
    with sessions.begin() as session:
        assert machines.find_by_thumbprint(session, old.thumbprint) is None
        assert machines.get_by_thumbprint(session, new.thumbprint).id == old.id
    assert new.id == old.id
    assert new.name == "web-1"
    assert new.thumbprint == thumbprint_of("new")
    assert new.roles == ("api",)
    assert new.health == "unknown"
    assert new.registered_ms == old.registered_ms


def test_invalid_registrations_are_refused(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        with pytest.raises(InvalidArgument, match="thumbprint"):
            machines.add(
                session,
                name="Web-1",
                comms_style="polling",
                endpoint=None,
                thumbprint="not hex",
                certificate_pem="pem",
            )
        with pytest.raises(InvalidArgument, match="endpoint"):
            machines.add(
                session,
                name="Web-1",
                comms_style="listening",
                endpoint=None,
                thumbprint=thumbprint_of("x"),
                certificate_pem="pem",
            )
        with pytest.raises(InvalidArgument, match="name"):
            register(session, " padded ")
        with pytest.raises(InvalidArgument, match="reserved for the server's own worker"):
            register(session, "Built-In-Worker")


def test_missing_machines_are_not_found(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        with pytest.raises(NotFound, match="'Web-9'"):
            machines.get_by_name(session, "Web-9")
        with pytest.raises(NotFound):
            machines.get_by_thumbprint(session, thumbprint_of("nobody"))
        with pytest.raises(NotFound, match="'Web-9'"):
            machines.remove(session, "Web-9")
        with pytest.raises(NotFound, match="'Web-9'"):
            machines.update_health(session, "Web-9", health="healthy")


def test_remove_returns_what_was_removed(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        added = register(session, "Web-1")
    with sessions.begin() as session:
        removed = machines.remove(session, "WEB-1")
    with sessions.begin() as session:
        assert machines.find_by_thumbprint(session, added.thumbprint) is None
        # The name and the certificate are free again.
        register(session, "Web-1")
    assert removed == added


def test_update_health_keeps_what_it_is_not_told(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        register(session, "Web-1")
        machines.update_health(
            session,
            "Web-1",
            health="healthy",
            tentacle_version="0.1.0",
            os="Linux",
            free_disk_bytes=10**12,
            checked_ms=100,
        )
    with sessions.begin() as session:
        record = machines.update_health(
            session, "web-1", health="unavailable", message="connection refused", checked_ms=200
        )
    assert record.health == "unavailable"
    assert record.health_message == "connection refused"
    assert (record.tentacle_version, record.os, record.free_disk_bytes) == (
        "0.1.0",
        "Linux",
        10**12,
    )
    assert record.last_health_check_ms == 200


def test_list_filters_by_environment_role_and_name(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        register(session, "Web-1", environments=("Production",), roles=("web",))
        register(session, "Web-2", environments=("Test",), roles=("web", "api"))
        register(session, "Db-1", environments=("Production", "Test"), roles=("db",))
        register(session, "Poller", style="polling", environments=(), roles=())
    with sessions.begin() as session:

        def names(
            environments: tuple[str, ...] = (),
            roles: tuple[str, ...] = (),
            names: tuple[str, ...] = (),
        ) -> list[str]:
            page = machines.list_machines(
                session, environments=environments, roles=roles, names=names
            )
            return [m.name for m in page.items]

        assert names() == ["Db-1", "Poller", "Web-1", "Web-2"]
        assert names(environments=("Production",)) == ["Db-1", "Web-1"]
        assert names(environments=("Test", "Staging")) == ["Db-1", "Web-2"]
        assert names(roles=("api", "db")) == ["Db-1", "Web-2"]
        assert names(environments=("Production",), roles=("web",)) == ["Web-1"]
        assert names(names=("web-2", "poller", "absent")) == ["Poller", "Web-2"]
        assert names(environments=("Nowhere",)) == []


def test_list_pages_by_name(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        for number in range(25):
            register(session, f"Machine-{number:02d}")
    seen: list[str] = []
    token: str | None = None
    pages = 0
    with sessions.begin() as session:
        while True:
            page = machines.list_machines(session, page_size=10, page_token=token)
            pages += 1
            seen.extend(m.name for m in page.items)
            token = page.next_page_token
            if token is None:
                break
    assert pages == 3
    assert seen == [f"Machine-{number:02d}" for number in range(25)]


def test_exactly_full_last_page_says_there_is_no_more(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        for number in range(4):
            register(session, f"M-{number}")
        first = machines.list_machines(session, page_size=2)
        second = machines.list_machines(session, page_size=2, page_token=first.next_page_token)
    assert first.next_page_token == "M-1"
    assert [m.name for m in second.items] == ["M-2", "M-3"]
    assert second.next_page_token is None


def test_trusted_certificates_by_comms_style(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        listening = register(session, "Web-1")
        polling = register(session, "Poller", style="polling")
    with sessions.begin() as session:
        everything = machines.trusted_certificates(session)
        pollers = machines.trusted_certificates(session, "polling")
    assert sorted(everything) == sorted(
        [
            (listening.thumbprint, listening.certificate_pem),
            (polling.thumbprint, polling.certificate_pem),
        ]
    )
    assert pollers == [(polling.thumbprint, polling.certificate_pem)]

"""Team grants hold in their own space; full rights hold everywhere."""

from __future__ import annotations

from cuttle.server.api.access import Grant, Principal
from cuttle.server.api.auth import allowed

ADMINISTER = Grant("Admins", "administer", frozenset(), frozenset())
LIMITED = Grant("Devs", "administer", frozenset({"p1"}), frozenset())


def test_grants_of_another_space_do_not_count() -> None:
    who = Principal("alice", frozenset(), (ADMINISTER,), grants_space_id="b")
    assert who.in_space("b").can("administer")
    elsewhere = who.in_space("default")
    assert not elsewhere.can_anywhere("view")
    # Unrestricted administer in a space other than the default one is not server-wide.
    assert not who.has_full_rights


def test_full_rights_come_from_the_default_space_or_the_admin_permission() -> None:
    admin_team = Principal(
        "root", frozenset(), (ADMINISTER,), grants_space_id="d", grants_from_default_space=True
    )
    assert admin_team.has_full_rights
    assert admin_team.in_space("b").can("administer", project="x")
    limited = Principal(
        "dev", frozenset(), (LIMITED,), grants_space_id="d", grants_from_default_space=True
    )
    assert not limited.has_full_rights
    assert not limited.in_space("b").can("view", project="p1")
    system = Principal("init", frozenset({"admin"}), ())
    assert system.has_full_rights
    assert system.in_space("b").can("administer")


def test_only_full_rights_reach_server_wide_services() -> None:
    method = "/cuttle.protocol.v1.SpaceService/CreateSpace"
    space_admin = Principal("alice", frozenset(), (ADMINISTER,), grants_space_id="b")
    assert not allowed(space_admin, method)
    # AdminService decides per machine and task (fleet_access.py), not at the door.
    assert allowed(space_admin, "/cuttle.protocol.v1.AdminService/ListMachines")
    default_admin = Principal(
        "root", frozenset(), (ADMINISTER,), grants_space_id="d", grants_from_default_space=True
    )
    assert allowed(default_admin, method)


def test_a_register_key_reaches_registration_only() -> None:
    installer = Principal("installer", frozenset({"machine:register"}), ())
    assert allowed(installer, "/cuttle.protocol.v1.AdminService/RegisterMachine")
    assert allowed(installer, "/cuttle.protocol.v1.AdminService/GetServerInfo")
    assert not allowed(installer, "/cuttle.protocol.v1.AdminService/ListMachines")
    assert not allowed(installer, "/cuttle.protocol.v1.ModelService/ListDocuments")

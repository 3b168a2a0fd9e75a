"""A grant's project and environment limits are never waived by leaving them out of the question."""

from __future__ import annotations

from cuttle.server.api.access import Grant, Principal

API_ADMIN = Grant("Api admins", "administer", frozenset({"api"}), frozenset())
DEV_DEPLOYER = Grant("Dev deployers", "deploy", frozenset(), frozenset({"dev"}))
API_DEV_VIEWER = Grant("Watchers", "view", frozenset({"api"}), frozenset({"dev"}))


def who(*grants: Grant) -> Principal:
    return Principal("someone", frozenset(), grants, grants_space_id="s")


def test_a_project_limited_grant_gives_nothing_outside_a_project() -> None:
    api_admin = who(API_ADMIN)
    assert api_admin.can("administer", project="api")
    assert api_admin.can("deploy", project="api", environment="prod")
    assert not api_admin.can("administer", project="web")
    # Teams, users, keys, machines and the script console belong to no project.
    assert not api_admin.can("administer")
    assert not api_admin.can("deploy", environment="prod")
    assert not api_admin.can("edit", environment="prod")


def test_an_environment_limited_grant_holds_for_its_environments_and_whole_projects() -> None:
    deployer = who(DEV_DEPLOYER)
    assert deployer.can("deploy", environment="dev")
    assert deployer.can("deploy", project="web", environment="dev")
    assert not deployer.can("deploy", project="web", environment="prod")
    assert not deployer.can("deploy", environment="prod")
    # A project as a whole is not bound to an environment; the server as a whole is.
    assert deployer.can("view", project="web")
    assert not deployer.can("deploy")


def test_viewing_what_belongs_to_no_project_stays_open_within_the_environments() -> None:
    viewer = who(API_DEV_VIEWER)
    assert viewer.can("view", environment="dev")
    assert not viewer.can("view", environment="prod")
    assert viewer.can("view", project="api")
    assert not viewer.can("view", project="web")
    assert not viewer.can("deploy", environment="dev")

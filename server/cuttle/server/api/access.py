"""Who is calling and what they may do: API keys, users, teams and their scoped roles.

A key made by `cuttle-server init` carries the system permission `admin` (everything) or
`machine:register` (a Tentacle registering itself). Any other key belongs to a user, and the
user's teams grant roles, each limited to projects and environments (empty: all). A user and
their teams live in one space and the grants hold in that space only, except full rights
(`admin`, or an unrestricted administer grant in the default space), which hold in every space
and over what is server-wide (machines, spaces). A refusal names the missing role and where it
was needed.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from dataclasses import dataclass, replace

from sqlalchemy.orm import Session

from cuttle.server.errors import PermissionDenied, Unauthenticated
from cuttle.server.model import documents as d
from cuttle.server.store import documents as doc_store
from cuttle.server.store.records import ApiKeyRecord

# What each role also allows: administer covers edit, edit and deploy and approve cover view.
# package_push is what a build server's key needs and nothing more: push to the built-in feed
# (and list it); edit and administer include it.
IMPLIED: dict[str, frozenset[str]] = {
    "view": frozenset({"view"}),
    "package_push": frozenset({"package_push"}),
    "deploy": frozenset({"deploy", "view"}),
    "approve": frozenset({"approve", "view"}),
    "edit": frozenset({"edit", "view", "package_push"}),
    "administer": frozenset({"administer", "edit", "deploy", "approve", "view", "package_push"}),
}


@dataclass(frozen=True, slots=True)
class Grant:
    """A role held through a team, limited to project and environment ids (empty: all)."""

    team: str
    role: str
    projects: frozenset[str]
    environments: frozenset[str]

    def covers(self, role: str, project: str | None, environment: str | None) -> bool:
        """Whether this grant gives role for the project and environment (None: not asked).

        A limit is not waived by leaving it out of the question, except for viewing: a grant
        limited to projects gives deploy, edit or administer only for one of those projects
        (not the script console, machines, teams, users or keys, which belong to no project:
        else `administer, projects [Api]` would administer teams everywhere), and one limited
        to environments gives them for one of those environments, or for a project as a whole
        (editing a project is not environment-bound, as in Octopus). Viewing what belongs to no
        project (environments, machines, the dashboard's columns) stays open to a limited
        grant, within its environments.
        """
        if role not in IMPLIED[self.role]:
            return False
        strict = role != "view"
        if self.projects:
            if project is None:
                if strict:
                    return False
            elif project not in self.projects:
                return False
        if self.environments:
            if environment is None:
                return project is not None or not strict
            return environment in self.environments
        return True

    @property
    def unrestricted(self) -> bool:
        """Whether the grant applies to every project and environment."""
        return not self.projects and not self.environments


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: a name for the audit trail and what it may do."""

    name: str
    system_permissions: frozenset[str]
    grants: tuple[Grant, ...]
    # Teams live in a space, so their grants hold there only ("": grants from no space).
    grants_space_id: str = ""
    # Whether that space is the default one, whose unrestricted administrators run the server.
    grants_from_default_space: bool = False
    # The API key the caller presented, recorded on the keys it creates (lineage).
    key_id: str = ""
    # The user the key acts as ("" for system keys): names repeat across spaces, ids do not.
    user_id: str = ""

    @property
    def is_system_admin(self) -> bool:
        """A key made with full rights by `cuttle-server init` (or an API key with them)."""
        return "admin" in self.system_permissions

    @property
    def may_register_machines(self) -> bool:
        """A key with `machine:register` (the installer's), or full rights."""
        return "machine:register" in self.system_permissions or self.has_full_rights

    @property
    def key_only_registers(self) -> bool:
        """A system key whose only power is registering machines (no user, no admin)."""
        return (
            not self.user_id
            and "machine:register" in self.system_permissions
            and not self.is_system_admin
        )

    @property
    def has_full_rights(self) -> bool:
        """System admin, or unrestricted administer through a team of the default space."""
        return self.is_system_admin or (
            self.grants_from_default_space
            and any(g.role == "administer" and g.unrestricted for g in self.grants)
        )

    def in_space(self, space_id: str) -> Principal:
        """The caller as seen from a space: team grants of another space do not count there."""
        # Full rights span the server (as Octopus's built-in administrators do).
        if space_id == self.grants_space_id or not self.grants or self.has_full_rights:
            return self
        return replace(self, grants=(), grants_space_id=space_id)

    def can(self, role: str, *, project: str | None = None, environment: str | None = None) -> bool:
        """Whether the caller holds role for this project and environment (ids)."""
        if self.is_system_admin:
            return True
        return any(g.covers(role, project, environment) for g in self.grants)

    def can_anywhere(self, role: str) -> bool:
        """Whether the caller holds role for at least some project or environment."""
        return self.is_system_admin or any(role in IMPLIED[g.role] for g in self.grants)

    def require(
        self,
        role: str,
        *,
        project: tuple[str, str] | None = None,
        environment: tuple[str, str] | None = None,
        action: str = "",
    ) -> None:
        """Raise PermissionDenied naming the missing role and where; project/env are (id, name)."""
        if self.can(
            role,
            project=project[0] if project else None,
            environment=environment[0] if environment else None,
        ):
            return
        where = []
        if project is not None:
            where.append(f"project {project[1]!r}")
        if environment is not None:
            where.append(f"environment {environment[1]!r}")
        scope = f" for {' in '.join(where)}" if where else " (unrestricted)"
        doing = f" to {action}" if action else ""
        raise PermissionDenied(f"{self.name!r} needs the {role} role{scope}{doing}")


def principal_for(session: Session, key: ApiKeyRecord) -> Principal:
    """The principal an API key acts as: its system permissions, or its user's team grants."""
    if key.user_id is None:
        return Principal(key.name, frozenset(key.permissions), (), key_id=key.id)
    try:
        user = doc_store.get(session, key.user_id)
    except Exception:  # noqa: BLE001 - a key whose user vanished acts as nobody
        raise Unauthenticated("the API key's user no longer exists") from None
    grants = tuple(_grants_of(session, user.space_id, user.id))
    default = doc_store.get_space(session, doc_store.DEFAULT_SPACE)
    return Principal(
        user.name,
        frozenset(key.permissions),
        grants,
        grants_space_id=user.space_id,
        grants_from_default_space=user.space_id == default.id,
        key_id=key.id,
        user_id=user.id,
    )


def _grants_of(session: Session, space_id: str, user_id: str) -> Iterable[Grant]:
    for team in doc_store.all_of_kind(session, space_id, "team"):
        spec = d.Team.model_validate(team.body)
        if user_id not in spec.members:
            continue
        for grant in spec.grants:
            yield Grant(
                team=team.name,
                role=grant.role,
                projects=frozenset(grant.projects),
                environments=frozenset(grant.environments),
            )


CURRENT: contextvars.ContextVar[Principal] = contextvars.ContextVar("cuttle_principal")


def current() -> Principal:
    """The principal of the call being handled (set by the admin interceptor)."""
    try:
        return CURRENT.get()
    except LookupError:
        raise Unauthenticated("no authenticated caller") from None

"""The kinds of document a space holds, in the order a configuration file is applied."""

from __future__ import annotations

from dataclasses import dataclass

from cuttle.server.model import documents as d


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of document: its schema, its key in files, who may change it."""

    name: str
    plural: str
    model: type[d.Document]
    # The role needed to create, change or delete one (view is enough to read).
    edit_role: d.Role
    # Whether a team's project limits apply to it (only projects are project-scoped).
    project_scoped: bool = False
    # Environments are ordered; the others list by name.
    ordered: bool = False

    @property
    def label(self) -> str:
        """The kind as people read it: 'library variable set'."""
        return self.name.replace("_", " ")


# Apply order: a document only refers to kinds earlier in the list, except projects and teams
# (manual interventions name teams, teams name projects), which apply resolves with ids it
# allocates before writing anything.
KINDS: tuple[Kind, ...] = (
    Kind("environment", "environments", d.Environment, "administer", ordered=True),
    Kind("tag_set", "tag_sets", d.TagSet, "administer"),
    Kind("machine_policy", "machine_policies", d.MachinePolicy, "administer"),
    Kind("lifecycle", "lifecycles", d.Lifecycle, "administer"),
    Kind("project_group", "project_groups", d.ProjectGroup, "edit"),
    Kind("library_variable_set", "library_variable_sets", d.LibraryVariableSet, "edit"),
    Kind("user", "users", d.User, "administer"),
    Kind("project", "projects", d.Project, "edit", project_scoped=True),
    Kind("tenant", "tenants", d.Tenant, "edit"),
    Kind("team", "teams", d.Team, "administer"),
)

BY_NAME = {k.name: k for k in KINDS}
BY_PLURAL = {k.plural: k for k in KINDS}


def kind(name: str) -> Kind:
    """The kind called name (singular or plural, '-' or '_'), or ValueError listing them."""
    key = name.strip().lower().replace("-", "_")
    found = BY_NAME.get(key) or BY_PLURAL.get(key)
    if found is None:
        raise ValueError(f"unknown kind {name!r}; kinds are: {', '.join(k.name for k in KINDS)}")
    return found


# What every new space starts with, as Octopus users expect: a lifecycle without phases
# (every environment, in order) and a project group.
DEFAULT_DOCUMENTS: tuple[d.Document, ...] = (
    d.Lifecycle(name="Default Lifecycle"),
    d.ProjectGroup(name="Default Project Group"),
)

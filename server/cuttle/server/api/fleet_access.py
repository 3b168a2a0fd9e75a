"""Who may see and act on machines and tasks: operations are authorized as the model is.

Machines are server-wide, but they belong to environments of the default space, so a caller's
grants there decide: seeing a machine needs the view role in one of its environments; changing
it needs edit, and removing it or replacing its certificate needs administer, in every
environment it is in (before and after the change). A task belongs to where it runs: a
deployment to its project and environment (in its space), an ad-hoc script to the environments
of its machines. Seeing a task needs view there; running or cancelling one needs deploy there,
in every one of those environments — the role that could have started it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from cuttle.server.api.access import Principal
from cuttle.server.domain.task_specs import DeploymentTaskSpec, ScriptTaskSpec
from cuttle.server.errors import PermissionDenied
from cuttle.server.store import documents as doc_store
from cuttle.server.store import machines as machine_store
from cuttle.server.store.errors import NotFound
from cuttle.server.store.records import MachineRecord, TaskRecord


@dataclass
class FleetAccess:
    """A caller's rights over the fleet and its tasks, for one transaction."""

    session: Session
    caller: Principal
    default_space_id: str = ""
    # Case-folded environment name -> id, in the default space (machines' environments).
    environment_ids: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session, caller: Principal) -> FleetAccess:
        """Read what the rules need once: the default space and its environments."""
        space = doc_store.get_space(session, doc_store.DEFAULT_SPACE)
        ids = {
            doc_store.name_key(record.name): record.id
            for record in doc_store.all_of_kind(session, space.id, "environment")
        }
        return cls(session, caller, space.id, ids)

    @property
    def fleet_caller(self) -> Principal:
        """The caller as seen from the default space, where machines' environments live."""
        return self.caller.in_space(self.default_space_id)

    def _environment(self, name: str) -> tuple[str, str]:
        # An environment missing from the model matches no restricted grant: "" is no id.
        return self.environment_ids.get(doc_store.name_key(name), ""), name

    def may_in_any(self, role: str, environments: Iterable[str]) -> bool:
        """Whether the caller holds role in at least one of these environments (names)."""
        who = self.fleet_caller
        if who.has_full_rights:
            return True
        return any(who.can(role, environment=self._environment(e)[0]) for e in environments)

    def may_in_every(self, role: str, environments: Sequence[str]) -> bool:
        """Whether the caller holds role in each of these environments (none: unrestricted)."""
        who = self.fleet_caller
        if who.has_full_rights:
            return True
        if not environments:
            return who.can(role)
        return all(who.can(role, environment=self._environment(e)[0]) for e in environments)

    def require_in_every(self, role: str, environments: Sequence[str], action: str) -> None:
        """Raise PermissionDenied naming the first environment where the role is missing."""
        who = self.fleet_caller
        if who.has_full_rights:
            return
        if not environments:
            who.require(role, action=action)
        for name in environments:
            who.require(role, environment=self._environment(name), action=action)

    def may_view_machine(self, machine: MachineRecord) -> bool:
        """Machine views need the view role in one of the machine's environments."""
        return self.may_in_any("view", machine.environments)

    def require_some_machine_view(self) -> None:
        """Refuse a caller who could see no machine at all (rather than show an empty list)."""
        who = self.fleet_caller
        if who.has_full_rights or who.can("view"):
            return
        if not any(who.can("view", environment=env_id) for env_id in self.environment_ids.values()):
            raise PermissionDenied(
                f"{who.name!r} needs the view role in at least one environment to see machines"
            )

    def task_environments(self, task: TaskRecord) -> tuple[str, ...]:
        """The environments a script task ran in (its machines' environments, names)."""
        spec = task.spec
        if isinstance(spec, ScriptTaskSpec) and spec.environments:
            return spec.environments
        # Tasks stored before the spec kept them: the machines' environments today.
        found: list[str] = []
        for node in task.machine_nodes:
            name = node.machine_name or node.name
            try:
                machine = machine_store.get_by_name(self.session, name)
            except NotFound:
                # Where a removed machine was is unknown: only an unrestricted caller may.
                found.append(f"(removed machine {name})")
                continue
            found.extend(e for e in machine.environments if e not in found)
        return tuple(found)

    def may_on_task(self, task: TaskRecord, role: str) -> bool:
        """Whether the caller holds role where the task runs."""
        spec = task.spec
        if isinstance(spec, DeploymentTaskSpec):
            return self.caller.in_space(spec.space_id).can(
                role, project=spec.project_id, environment=spec.environment_id
            )
        return self.may_in_every(role, self.task_environments(task))

    def require_on_task(self, task: TaskRecord, role: str, action: str) -> None:
        """Raise PermissionDenied unless the caller holds role where the task runs."""
        spec = task.spec
        if isinstance(spec, DeploymentTaskSpec):
            self.caller.in_space(spec.space_id).require(
                role,
                project=(spec.project_id, spec.project_name),
                environment=(spec.environment_id, spec.environment_name),
                action=action,
            )
            return
        self.require_in_every(role, self.task_environments(task), action)

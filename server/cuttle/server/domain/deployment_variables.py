"""The variable dictionary of one action on one machine, and save-time template validation.

`assemble_action_variables` is the one call the deployment engine makes. It layers, lowest first:

1. the release's project and library values resolved for this action and machine
   (`variable_scopes.resolve`), and, for a tenanted deployment, the tenant's own values
   (`TenantValue`), which compete with them as values scoped to that tenant (see
   `resolve_with_tenant`);
2. output variables of earlier actions, as `Octopus.Action[Action].Output[Machine].Name` and
   `Octopus.Action[Action].Output.Name`; the short form is the value this machine wrote itself
   when it ran that action (Octopus scopes that copy to the machine), otherwise the last writer
   across machines by sequence;
3. system variables describing the deployment (`Octopus.Project.Name`, `Octopus.Machine.Name`,
   ...). They are facts: a project value with the same name cannot override them (it is dropped
   and listed in `overridden` so the engine can warn). Settings that users set as variables,
   such as `Octopus.Action.MaxParallelism`, are only supplied when the step itself sets them,
   so a project value of that name otherwise applies unchanged.

Names are case-insensitive throughout, as in the template language; a later layer replaces an
earlier name regardless of spelling. Sensitive names stay listed in `sensitive_names`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from cuttle.protocol.variables import TemplateSyntaxError, parse
from cuttle.server.domain.variable_scopes import (
    DEPLOYMENT_PROCESS,
    ResolvedVariable,
    Scope,
    ScopeContext,
    VariableValue,
    resolve,
    specificity,
)


@dataclass(frozen=True)
class DeploymentDescription:
    """What is being deployed, where, and under which ids."""

    deployment_id: str
    task_id: str
    project_id: str
    project_name: str
    release_number: str
    environment_id: str
    environment_name: str
    channel_name: str
    space_id: str
    space_name: str
    release_id: str | None = None
    tenant_id: str | None = None
    tenant_name: str | None = None
    tenant_tags: tuple[str, ...] = ()
    process: str = DEPLOYMENT_PROCESS


@dataclass(frozen=True)
class ActionDescription:
    """The step and action being run; `max_parallelism` only when the step sets it."""

    step_name: str
    action_name: str
    target_roles: tuple[str, ...] = ()
    max_parallelism: int | None = None


@dataclass(frozen=True)
class MachineDescription:
    """The deployment target the action runs on."""

    machine_id: str
    name: str
    roles: tuple[str, ...] = ()
    hostname: str | None = None


@dataclass(frozen=True)
class OutputVariable:
    """An output variable an earlier action set on a machine; `sequence` orders all writes."""

    action_name: str
    machine_name: str | None
    name: str
    value: str
    sensitive: bool
    sequence: int


@dataclass(frozen=True)
class TenantValue:
    """A value the deployment's tenant provides, for one project and/or environment or for all.

    Not part of a release snapshot: as in Octopus, a deployment reads the tenant's values as
    they are when it runs, so onboarding a tenant needs no new release.
    """

    name: str
    value: str
    sensitive: bool = False
    project: str | None = None
    environment: str | None = None


@dataclass(frozen=True)
class ActionVariables:
    """The assembled dictionary, the names whose values are secret, and dropped user names."""

    values: Mapping[str, str]
    sensitive_names: frozenset[str]
    overridden: tuple[str, ...] = ()

    def is_sensitive(self, name: str) -> bool:
        """Whether `name` (any spelling) holds a sensitive value."""
        folded = name.casefold()
        return any(sensitive.casefold() == folded for sensitive in self.sensitive_names)

    @property
    def sensitive_values(self) -> frozenset[str]:
        """The secret values themselves, for masking logs."""
        return frozenset(self.values[name] for name in self.sensitive_names if self.values[name])


class _Layers:
    """A case-insensitive dictionary that remembers declared spelling and sensitivity."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[str, str, bool]] = {}

    def put(self, name: str, value: str, sensitive: bool) -> str | None:
        """Set `name`; return the spelling of a replaced entry, if any."""
        key = name.casefold()
        replaced = self.entries.get(key)
        self.entries[key] = (name, value, sensitive)
        return None if replaced is None else replaced[0]


def scope_context_for(
    deployment: DeploymentDescription,
    action: ActionDescription,
    machine: MachineDescription | None,
) -> ScopeContext:
    """The scope context of one action on one machine (or on the server, without a machine)."""
    return ScopeContext(
        environment=deployment.environment_name,
        machine=None if machine is None else machine.name,
        roles=frozenset(() if machine is None else machine.roles),
        target_roles=frozenset(action.target_roles),
        action=action.action_name,
        channel=deployment.channel_name,
        tenant=deployment.tenant_name,
        tenant_tags=frozenset(deployment.tenant_tags),
        process=deployment.process,
    )


def system_variables(
    deployment: DeploymentDescription,
    action: ActionDescription,
    machine: MachineDescription | None,
) -> dict[str, str]:
    """The Octopus-named system variables of one action on one machine."""
    result = {
        "Octopus.Space.Id": deployment.space_id,
        "Octopus.Space.Name": deployment.space_name,
        "Octopus.Project.Id": deployment.project_id,
        "Octopus.Project.Name": deployment.project_name,
        "Octopus.Release.Number": deployment.release_number,
        "Octopus.Release.Channel.Name": deployment.channel_name,
        "Octopus.Environment.Id": deployment.environment_id,
        "Octopus.Environment.Name": deployment.environment_name,
        "Octopus.Deployment.Id": deployment.deployment_id,
        "Octopus.Task.Id": deployment.task_id,
        "Octopus.Step.Name": action.step_name,
        "Octopus.Action.Name": action.action_name,
        "Octopus.Action.TargetRoles": ",".join(action.target_roles),
    }
    if deployment.release_id is not None:
        result["Octopus.Release.Id"] = deployment.release_id
    if deployment.tenant_name is not None:
        tenant_id = deployment.tenant_id or ""
        tags = ",".join(deployment.tenant_tags)
        result.update(
            {
                "Octopus.Tenant.Id": tenant_id,
                "Octopus.Tenant.Name": deployment.tenant_name,
                "Octopus.Deployment.Tenant.Id": tenant_id,
                "Octopus.Deployment.Tenant.Name": deployment.tenant_name,
                "Octopus.Deployment.Tenant.Tags": tags,
            }
        )
    if action.max_parallelism is not None:
        result["Octopus.Action.MaxParallelism"] = str(action.max_parallelism)
    if machine is not None:
        folded_targets = {role.casefold() for role in action.target_roles}
        targeted = [role for role in machine.roles if role.casefold() in folded_targets]
        result.update(
            {
                "Octopus.Machine.Id": machine.machine_id,
                "Octopus.Machine.Name": machine.name,
                "Octopus.Machine.Roles": ",".join(machine.roles),
                "Octopus.Tentacle.CurrentDeployment.TargetedRoles": ",".join(targeted),
            }
        )
        if machine.hostname:
            result["Octopus.Machine.Hostname"] = machine.hostname
    return result


def output_variables(
    outputs: Iterable[OutputVariable], machine_name: str | None
) -> list[tuple[str, str, bool]]:
    """Both forms of every output variable as (name, value, sensitive), as seen from a machine."""
    # Sequence numbers are unique per task; should two collide, the fixed tie-break still gives
    # one answer whatever order the records came in.
    ordered = sorted(
        outputs, key=lambda record: (record.sequence, record.machine_name or "", record.value)
    )
    here = None if machine_name is None else machine_name.casefold()
    per_machine: dict[tuple[str, str, str], OutputVariable] = {}
    last_writer: dict[tuple[str, str], OutputVariable] = {}
    own: dict[tuple[str, str], OutputVariable] = {}
    for record in ordered:
        key = (record.action_name.casefold(), record.name.casefold())
        last_writer[key] = record
        if record.machine_name is not None:
            per_machine[(*key, record.machine_name.casefold())] = record
            if record.machine_name.casefold() == here:
                own[key] = record
    result = []
    for record in per_machine.values():
        name = f"Octopus.Action[{record.action_name}].Output[{record.machine_name}].{record.name}"
        result.append((name, record.value, record.sensitive))
    for key, record in last_writer.items():
        chosen = own.get(key, record)
        name = f"Octopus.Action[{chosen.action_name}].Output.{chosen.name}"
        result.append((name, chosen.value, chosen.sensitive))
    return result


def _tenant_rank(value: TenantValue) -> tuple[bool, bool, bool, str]:
    # Higher wins: environment-specific over all environments, then project-specific over all
    # projects; then, only between duplicates, sensitive first and the value text, so the
    # result never depends on the order the values came in.
    return (
        value.environment is not None,
        value.project is not None,
        value.sensitive,
        value.value,
    )


def tenant_winners(
    tenant_values: Iterable[TenantValue], deployment: DeploymentDescription
) -> dict[str, TenantValue]:
    """Per case-folded name, the tenant value that applies to this deployment, if any."""
    if deployment.tenant_name is None:
        return {}
    project = deployment.project_name.casefold()
    environment = deployment.environment_name.casefold()
    best: dict[str, TenantValue] = {}
    for value in tenant_values:
        if value.project is not None and value.project.casefold() != project:
            continue
        if value.environment is not None and value.environment.casefold() != environment:
            continue
        key = value.name.casefold()
        current = best.get(key)
        if current is None or _tenant_rank(value) > _tenant_rank(current):
            best[key] = value
    return best


def resolve_with_tenant(
    values: Iterable[VariableValue],
    tenant_values: Iterable[TenantValue],
    deployment: DeploymentDescription,
    context: ScopeContext,
    prompted_values: Mapping[str, str] | None = None,
) -> dict[str, ResolvedVariable]:
    """Project and library values resolved in `context`, with the tenant's values competing.

    A tenant value counts as a value scoped to the deployment's tenant (and to its environment
    when it names one), so it beats the unscoped value and values scoped to tenant tags,
    environments, channels or processes, and loses to values scoped to a role, machine or
    action. At equal specificity the tenant's own value beats a project or library value scoped
    the same way: the tenant is where its values are kept.
    """
    resolved = {
        item.name.casefold(): item for item in resolve(values, context, prompted_values).values()
    }
    for key, tenant in tenant_winners(tenant_values, deployment).items():
        scope = Scope.of(tenant=deployment.tenant_name or (), environment=tenant.environment or ())
        mask = specificity(scope, context)
        if mask is None:
            # A context that is not this deployment's (another tenant or environment).
            continue
        current = resolved.get(key)
        if current is None or mask >= (specificity(current.origin.scope, context) or 0):
            origin = VariableValue(tenant.name, tenant.value, scope, tenant.sensitive)
            resolved[key] = ResolvedVariable(tenant.name, tenant.value, tenant.sensitive, origin)
    return {item.name: item for item in resolved.values()}


def assemble_action_variables(
    values: Iterable[VariableValue],
    deployment: DeploymentDescription,
    action: ActionDescription,
    machine: MachineDescription | None,
    outputs: Iterable[OutputVariable] = (),
    prompted_values: Mapping[str, str] | None = None,
    tenant_values: Iterable[TenantValue] = (),
) -> ActionVariables:
    """Build the variable dictionary for one action on one machine (None: on the server)."""
    context = scope_context_for(deployment, action, machine)
    layers = _Layers()
    resolved = resolve_with_tenant(values, tenant_values, deployment, context, prompted_values)
    for item in resolved.values():
        layers.put(item.name, item.value, item.sensitive)
    user_names = set(layers.entries)
    overridden: list[str] = []
    machine_name = None if machine is None else machine.name
    later = [
        *output_variables(outputs, machine_name),
        *(
            (name, text, False)
            for name, text in system_variables(deployment, action, machine).items()
        ),
    ]
    for name, text, sensitive in later:
        replaced = layers.put(name, text, sensitive)
        key = name.casefold()
        if replaced is not None and key in user_names:
            overridden.append(replaced)
            user_names.discard(key)
    entries = layers.entries.values()
    return ActionVariables(
        values=MappingProxyType({name: text for name, text, _ in entries}),
        sensitive_names=frozenset(name for name, _, sensitive in entries if sensitive),
        overridden=tuple(sorted(overridden, key=str.casefold)),
    )


@dataclass(frozen=True)
class TemplateProblem:
    """A variable value whose template does not parse, with the position of the fault."""

    name: str
    source: str
    scope: Scope
    line: int
    column: int
    reason: str

    @property
    def message(self) -> str:
        """A human explanation: which value, where in it, and what is wrong."""
        return (
            f"Variable '{self.name}' ({self.source}, scoped to {self.scope.describe()}) is not a "
            f"valid template at line {self.line}, column {self.column}: {self.reason}"
        )


def validate_templates(values: Sequence[VariableValue]) -> list[TemplateProblem]:
    """Parse every value as a template; report the malformed ones with line and column."""
    problems = []
    for value in values:
        try:
            parse(value.value)
        except TemplateSyntaxError as exc:
            # The parser quotes the offending text; a secret must not reach a message.
            reason = (
                "malformed template (text withheld: sensitive)" if value.sensitive else exc.message
            )
            problems.append(
                TemplateProblem(value.name, value.source, value.scope, exc.line, exc.column, reason)
            )
    return problems

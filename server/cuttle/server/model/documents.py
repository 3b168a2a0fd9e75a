"""The deployment model as documents: one schema for YAML files, the admin API and the store.

Every kind a user describes (environments, lifecycles, projects with their process, channels,
variables and runbooks, tenants, teams...) is a pydantic model here. The same model validates a
YAML file (with field paths), an API request and what the store reads back, so the three can
never drift apart. Unknown fields are errors: a typo in a file must not be silently ignored.

References to other documents are names, marked with `Ref` (see references.py); the store keeps
ids. Names inside one project (steps, actions, channels) are plain strings checked here.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cuttle.protocol.variables import TemplateSyntaxError, parse
from cuttle.server.domain import variable_scopes as scopes
from cuttle.server.model.references import Ref

NAME_MAX = 200

EnvironmentRef = Annotated[str, Ref("environment")]
LifecycleRef = Annotated[str, Ref("lifecycle")]
ProjectRef = Annotated[str, Ref("project")]
ProjectGroupRef = Annotated[str, Ref("project_group")]
LibraryVariableSetRef = Annotated[str, Ref("library_variable_set")]
TenantRef = Annotated[str, Ref("tenant")]
TeamRef = Annotated[str, Ref("team")]
UserRef = Annotated[str, Ref("user")]
MachinePolicyRef = Annotated[str, Ref("machine_policy")]

# Tenant tags are written "Tag set/Tag", as in Octopus.
_TENANT_TAG = re.compile(r"[^/]+/[^/]+")


class Spec(BaseModel):
    """Base of every document: strict about unknown fields, names trimmed and bounded."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


def _check_name(value: str, what: str = "name") -> str:
    if not value or value != value.strip():
        raise ValueError(f"{what} must not be empty or start or end with spaces")
    if len(value) > NAME_MAX:
        raise ValueError(f"{what} is longer than {NAME_MAX} characters")
    return value


def _no_duplicates(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        key = name.casefold()
        if key in seen:
            raise ValueError(f"{what} {name!r} appears more than once")
        seen.add(key)


def _check_template(value: str, what: str) -> str:
    # A template that saves fine must never fail at deploy time: reject it now, with position.
    try:
        parse(value)
    except TemplateSyntaxError as exc:
        raise ValueError(f"{what} is not a valid #{{...}} template: {exc}") from exc
    return value


class Document(Spec):
    """A named top-level document."""

    name: str
    description: str = ""

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _check_name(value)


# -- environments, policies, tags -----------------------------------------------------------


class Environment(Document):
    """A place releases are deployed to; the order of environments is the order of the space."""

    use_guided_failure: bool = False


class MachinePolicy(Document):
    """How often machines are health-checked and how long an unreachable one stays available."""

    health_check_interval_seconds: float = Field(default=3600.0, gt=0)
    unavailable_after_seconds: float = Field(default=300.0, ge=0)


class TagSet(Document):
    """A set of tenant tags; a tenant is tagged "Set/Tag"."""

    tags: list[str] = []

    @field_validator("tags")
    @classmethod
    def _valid_tags(cls, value: list[str]) -> list[str]:
        for tag in value:
            _check_name(tag, "tag")
            if "/" in tag:
                raise ValueError(f"tag {tag!r} must not contain '/'")
        _no_duplicates(value, "tag")
        return value


# -- lifecycles ------------------------------------------------------------------------------


class RetentionPolicy(Spec):
    """How many releases (or days of them) to keep; 0 keeps everything."""

    quantity_to_keep: int = Field(default=0, ge=0)
    unit: Literal["items", "days"] = "items"


class Phase(Spec):
    """A stage of a lifecycle; the next phase opens when this one has its minimum deployments."""

    name: str
    automatic_environments: list[EnvironmentRef] = []
    optional_environments: list[EnvironmentRef] = []
    # 0 means every environment of the phase.
    minimum_environments_before_promotion: int = Field(default=0, ge=0)
    is_optional: bool = False
    release_retention: RetentionPolicy | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _check_name(value, "phase name")

    @model_validator(mode="after")
    def _consistent(self) -> Phase:
        _no_duplicates([*self.automatic_environments, *self.optional_environments], "environment")
        count = len(self.automatic_environments) + len(self.optional_environments)
        if count and self.minimum_environments_before_promotion > count:
            raise ValueError(
                f"minimum_environments_before_promotion is "
                f"{self.minimum_environments_before_promotion} but the phase has only "
                f"{count} environment(s)"
            )
        return self


class Lifecycle(Document):
    """Ordered phases a release moves through; no phases means every environment in order."""

    phases: list[Phase] = []
    release_retention: RetentionPolicy = RetentionPolicy()

    @model_validator(mode="after")
    def _consistent(self) -> Lifecycle:
        _no_duplicates([p.name for p in self.phases], "phase")
        _no_duplicates(
            [
                env
                for p in self.phases
                for env in (*p.automatic_environments, *p.optional_environments)
            ],
            "environment (an environment belongs to one phase)",
        )
        return self


# -- variables -------------------------------------------------------------------------------


class Scope(Spec):
    """Where a variable value applies: OR within a kind, AND across kinds, empty = anywhere."""

    environments: list[EnvironmentRef] = []
    roles: list[str] = []
    machines: list[str] = []
    actions: list[str] = []
    channels: list[str] = []
    tenants: list[TenantRef] = []
    tenant_tags: list[str] = []
    processes: list[str] = []

    def is_empty(self) -> bool:
        """Whether the value applies everywhere."""
        return not any(
            (
                self.environments,
                self.roles,
                self.machines,
                self.actions,
                self.channels,
                self.tenants,
                self.tenant_tags,
                self.processes,
            )
        )


class Prompt(Spec):
    """A value asked for when a deployment is created."""

    label: str = ""
    description: str = ""
    required: bool = False


class Variable(Spec):
    """One value of a variable; a name may have several values with different scopes.

    A sensitive value is write-only: reads return it as null. In a file it is never written;
    `value_from_env` names an environment variable of the `cuttle apply` process instead.
    """

    name: str
    value: str | None = None
    sensitive: bool = False
    value_from_env: str | None = None
    scope: Scope = Scope()
    prompt: Prompt | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _check_name(value, "variable name")

    @model_validator(mode="after")
    def _consistent(self) -> Variable:
        if self.value_from_env is not None and self.value is not None:
            raise ValueError("give value or value_from_env, not both")
        if self.value is not None and not self.sensitive:
            _check_template(self.value, f"the value of {self.name}")
        return self


def check_variable_set(variables: list[Variable]) -> None:
    """Reject values of one name that would tie at deploy time: nobody could tell which wins.

    The same scope twice always ties. Different scopes tie when some deployment matches both
    equally specifically (environments {Dev, Test} and {Dev}); the rule is the resolver's own
    (domain/variable_scopes.py). A tie that needs one machine with two of the roles, or one
    tenant with two of the tags, is allowed, as Octopus allows it: role-scoped values are how
    most Octopus projects are written, and most machines have one role.
    """
    seen: set[tuple[str, str]] = set()
    for variable in variables:
        key = (variable.name.casefold(), _scope_key(variable.scope))
        if key in seen:
            raise ValueError(
                f"variable {variable.name!r} has two values with the same scope "
                f"{_describe_scope(variable.scope)}"
            )
        seen.add(key)
    domain_values = [
        scopes.VariableValue(
            name=v.name,
            value=v.value or "",
            scope=scopes.Scope.of(
                environment=v.scope.environments,
                role=v.scope.roles,
                machine=v.scope.machines,
                action=v.scope.actions,
                channel=v.scope.channels,
                tenant=v.scope.tenants,
                tenant_tag=v.scope.tenant_tags,
                process=v.scope.processes,
            ),
            sensitive=v.sensitive,
        )
        for v in variables
    ]
    for ambiguity in scopes.find_ambiguities(domain_values):
        if len(ambiguity.example.roles) > 1 or len(ambiguity.example.tenant_tags) > 1:
            continue
        raise ValueError(ambiguity.message)


def _scope_key(scope: Scope) -> str:
    # Names are case-insensitive and a scope is a set: [Dev, Test] is [test, dev].
    return repr(
        sorted((k, sorted({x.casefold() for x in v})) for k, v in scope.model_dump().items())
    )


def _describe_scope(scope: Scope) -> str:
    parts = [f"{k}={','.join(v)}" for k, v in scope.model_dump().items() if v]
    return "(" + "; ".join(parts) + ")" if parts else "(unscoped)"


class LibraryVariableSet(Document):
    """Variables shared by the projects that include the set."""

    variables: list[Variable] = []

    @model_validator(mode="after")
    def _consistent(self) -> LibraryVariableSet:
        check_variable_set(self.variables)
        return self


# -- process ---------------------------------------------------------------------------------

ActionType = Literal["run_script", "deploy_package", "manual_intervention", "health_check"]
ScriptSyntax = Literal["bash", "python", "sh", "pwsh"]


class PackageReference(Spec):
    """A package an action deploys or takes its script from."""

    package_id: str
    feed: str = "builtin"
    # Empty: chosen when the release is created (the newest that fits the channel).
    version: str = ""


class Script(Spec):
    """What a run_script action runs: an inline body, or a file inside a package."""

    syntax: ScriptSyntax = "bash"
    body: str | None = None
    package: PackageReference | None = None
    file: str | None = None
    parameters: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Script:
        if (self.body is None) == (self.package is None):
            raise ValueError("a script is either an inline body or a file from a package")
        if self.package is not None and not self.file:
            raise ValueError("a script from a package needs the file to run")
        if self.body is not None:
            _check_template(self.body, "the script body")
        return self


class Action(Spec):
    """One thing a step does on each of its machines."""

    name: str
    type: ActionType
    script: Script | None = None
    package: PackageReference | None = None
    instructions: str = ""
    responsible_teams: list[TeamRef] = []
    properties: dict[str, str] = {}
    environments: list[EnvironmentRef] = []
    excluded_environments: list[EnvironmentRef] = []
    channels: list[str] = []
    tenant_tags: list[str] = []
    disabled: bool = False
    required: bool = False
    retries: int = Field(default=0, ge=0, le=100)
    # How long to wait before retrying a failed action on a machine (Octopus waits 15 s).
    retry_delay_seconds: int = Field(default=15, ge=0, le=3600)
    execution_timeout_seconds: int = Field(default=0, ge=0)
    # Evaluated per machine; the action runs on machines where it is true.
    machine_condition: str = ""

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _check_name(value, "action name")

    @model_validator(mode="after")
    def _consistent(self) -> Action:
        if self.type == "run_script" and self.script is None:
            raise ValueError("a run_script action needs a script")
        if self.type == "deploy_package" and self.package is None:
            raise ValueError("a deploy_package action needs a package")
        if self.type != "run_script" and self.script is not None:
            raise ValueError(f"a {self.type} action has no script")
        if self.type == "manual_intervention" and not self.instructions:
            raise ValueError("a manual_intervention action needs instructions")
        if set(self.environments) & set(self.excluded_environments):
            raise ValueError("an environment cannot be both included and excluded")
        for name, value in self.properties.items():
            _check_template(value, f"property {name}")
        if self.machine_condition:
            _check_template(self.machine_condition, "machine_condition")
        return self


class Step(Spec):
    """A stage of a process: its actions run on the machines with its target tags."""

    name: str
    target_tags: list[str] = []
    start_trigger: Literal["after_previous", "with_previous"] = "after_previous"
    condition: Literal["success", "failure", "always", "variable"] = "success"
    condition_expression: str = ""
    # Rolling deployment: at most this many machines at once (None: all at once).
    window_size: int | None = Field(default=None, ge=1)
    actions: list[Action] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _check_name(value, "step name")

    @model_validator(mode="after")
    def _consistent(self) -> Step:
        if self.condition == "variable":
            if not self.condition_expression:
                raise ValueError("a variable condition needs condition_expression")
            _check_template(self.condition_expression, "condition_expression")
        elif self.condition_expression:
            raise ValueError("condition_expression is only used with condition: variable")
        _no_duplicates([a.name for a in self.actions], "action")
        return self


class Process(Spec):
    """An ordered list of steps."""

    steps: list[Step] = []

    @model_validator(mode="after")
    def _consistent(self) -> Process:
        _no_duplicates([s.name for s in self.steps], "step")
        # Octopus.Action[Name] must be unambiguous across the whole process.
        action_names = [a.name for s in self.steps for a in s.actions]
        step_names = {s.name.casefold(): s for s in self.steps}
        _no_duplicates(action_names, "action")
        for step in self.steps:
            for action in step.actions:
                owner = step_names.get(action.name.casefold())
                if owner is not None and owner is not step:
                    raise ValueError(f"action {action.name!r} has the name of another step")
        if self.steps and self.steps[0].start_trigger == "with_previous":
            raise ValueError("the first step cannot start with a previous step")
        return self

    def action_names(self) -> set[str]:
        """Names of steps and actions, case-folded, for variable scoping."""
        return {s.name.casefold() for s in self.steps} | {
            a.name.casefold() for s in self.steps for a in s.actions
        }


# -- projects --------------------------------------------------------------------------------


class ProjectGroup(Document):
    """A folder of projects."""


class Channel(Spec):
    """A release stream of a project: a version rule and optionally its own lifecycle."""

    name: str
    description: str = ""
    lifecycle: LifecycleRef | None = None
    # NuGet range syntax, e.g. "[1.0,2.0)"; empty allows every version.
    version_range: str = ""
    # A regular expression the pre-release tag must match; "^$" allows no pre-release.
    prerelease_pattern: str = ""
    is_default: bool = False
    tenant_tags: list[str] = []

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _check_name(value, "channel name")

    @field_validator("prerelease_pattern")
    @classmethod
    def _valid_pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"prerelease_pattern is not a regular expression: {exc}") from exc
        return value


class Runbook(Spec):
    """An operations process of a project, run in the environments it allows."""

    name: str
    description: str = ""
    environments: list[EnvironmentRef] = []
    process: Process = Process()

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _check_name(value, "runbook name")


DEFAULT_VERSION_TEMPLATE = (
    "#{Octopus.Version.LastMajor}.#{Octopus.Version.LastMinor}.#{Octopus.Version.NextPatch}"
)


class Project(Document):
    """What is deployed: a process, its variables, channels and runbooks."""

    group: ProjectGroupRef = "Default Project Group"
    lifecycle: LifecycleRef = "Default Lifecycle"
    # default: as each environment says; on/off: for every environment (a deployment may
    # still choose). `true`/`false`, as written before, read as on/default.
    use_guided_failure: Literal["default", "on", "off"] = "default"
    tenanted_mode: Literal["untenanted", "tenanted", "tenanted_or_untenanted"] = "untenanted"
    release_version_template: str = DEFAULT_VERSION_TEMPLATE
    channels: list[Channel] = [Channel(name="Default", is_default=True)]
    process: Process = Process()
    variables: list[Variable] = []
    library_variable_sets: list[LibraryVariableSetRef] = []
    runbooks: list[Runbook] = []

    @field_validator("use_guided_failure", mode="before")
    @classmethod
    def _guided_failure_from_bool(cls, value: object) -> object:
        if isinstance(value, bool):
            return "on" if value else "default"
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Project:
        _no_duplicates([c.name for c in self.channels], "channel")
        _no_duplicates([r.name for r in self.runbooks], "runbook")
        _no_duplicates(list(self.library_variable_sets), "library variable set")
        if not self.channels:
            raise ValueError("a project needs at least one channel")
        defaults = [c.name for c in self.channels if c.is_default]
        if len(defaults) != 1:
            raise ValueError(
                f"exactly one channel must be the default (found {len(defaults)}: "
                f"{', '.join(defaults) or 'none'})"
            )
        _check_template(self.release_version_template, "release_version_template")
        check_variable_set(self.variables)
        channels = {c.name.casefold() for c in self.channels}
        actions = self.process.action_names()
        processes = {"deployment"} | {r.name.casefold() for r in self.runbooks}
        for variable in self.variables:
            for channel in variable.scope.channels:
                if channel.casefold() not in channels:
                    raise ValueError(
                        f"variable {variable.name!r} is scoped to channel {channel!r}, "
                        "which the project does not have"
                    )
            for scoped in variable.scope.actions:
                if scoped.casefold() not in actions:
                    raise ValueError(
                        f"variable {variable.name!r} is scoped to step {scoped!r}, "
                        "which the process does not have"
                    )
            for process in variable.scope.processes:
                if process.casefold() not in processes:
                    raise ValueError(
                        f"variable {variable.name!r} is scoped to process {process!r}: use "
                        "'deployment' or the name of one of the project's runbooks"
                    )
        for step in self.process.steps:
            for action in step.actions:
                for channel in action.channels:
                    if channel.casefold() not in channels:
                        raise ValueError(
                            f"action {action.name!r} is limited to channel {channel!r}, "
                            "which the project does not have"
                        )
        return self

    def default_channel(self) -> Channel:
        """The channel releases go to when none is named."""
        return next(c for c in self.channels if c.is_default)


# -- tenants ---------------------------------------------------------------------------------


class TenantProject(Spec):
    """A project a tenant takes part in, and in which environments."""

    project: ProjectRef
    environments: list[EnvironmentRef] = []


class TenantVariable(Spec):
    """A tenant's value for a variable, optionally for one project and environment."""

    name: str
    value: str | None = None
    sensitive: bool = False
    value_from_env: str | None = None
    project: ProjectRef | None = None
    environment: EnvironmentRef | None = None


class Tenant(Document):
    """A customer or site deployed to separately, with tags and its own variable values."""

    tags: list[str] = []
    projects: list[TenantProject] = []
    variables: list[TenantVariable] = []

    @field_validator("tags")
    @classmethod
    def _valid_tags(cls, value: list[str]) -> list[str]:
        for tag in value:
            if not _TENANT_TAG.fullmatch(tag):
                raise ValueError(f"tenant tag {tag!r} must be written 'Tag set/Tag'")
        _no_duplicates(value, "tag")
        return value


# -- people ----------------------------------------------------------------------------------

Role = Literal["view", "package_push", "deploy", "approve", "edit", "administer"]


class RoleGrant(Spec):
    """A role a team holds, limited to projects and environments (empty: all of them)."""

    role: Role
    projects: list[ProjectRef] = []
    environments: list[EnvironmentRef] = []


class User(Document):
    """A person or a service account; API keys belong to users."""

    display_name: str = ""
    email: str = ""
    is_service_account: bool = False


class Team(Document):
    """Users who share roles."""

    members: list[UserRef] = []
    grants: list[RoleGrant] = []

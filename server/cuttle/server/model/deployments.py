"""Deployments in the model: from a release and an environment to a planned task, and back.

`DeploymentRequest` is what a person asks for. `plan` checks the lifecycle, resolves names,
reads the release's frozen process and the machines, and returns the plan (what --dry-run
prints). `create` stores the task with its tree and records the deployment for the lifecycle.
`load_material` is the engine's read of everything it needs to run the task: the frozen
process, the release's variable values (sensitive ones decrypted, in memory only), the
machines' descriptions.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.orm import Session

from cuttle.server.domain import plan as p
from cuttle.server.domain import variable_scopes as scopes
from cuttle.server.domain.deployment_variables import MachineDescription
from cuttle.server.domain.task_specs import DeploymentTaskSpec, SpecVariable
from cuttle.server.domain.task_states import NodeKind, NodeState
from cuttle.server.encryption import Encryptor
from cuttle.server.errors import FailedPrecondition, NotFound, ValidationFailed
from cuttle.server.model import documents as d
from cuttle.server.model.releases import Releases
from cuttle.server.model.repository import ModelRepository
from cuttle.server.store import documents as doc_store
from cuttle.server.store import machines as machine_store
from cuttle.server.store import releases as release_store
from cuttle.server.store import tasks
from cuttle.server.store.errors import NotFound as StoreNotFound
from cuttle.server.store.records import TaskRecord
from cuttle.server.store.releases import ReleaseRecord


@dataclass(frozen=True)
class DeploymentRequest:
    """What a person asked to deploy, where, and with which choices."""

    project: str
    release: str
    environment: str
    skip_steps: tuple[str, ...] = ()
    specific_machines: tuple[str, ...] = ()
    excluded_machines: tuple[str, ...] = ()
    # Prompted variable values; sensitive ones arrive from the CLI's environment, never argv.
    variables: tuple[tuple[str, str, bool], ...] = ()
    guided_failure: Literal["default", "on", "off"] = "default"


@dataclass(frozen=True)
class PreparedDeployment:
    """A checked request: the release, the environment and the plan."""

    release: ReleaseRecord
    project_id: str
    project_name: str
    environment_id: str
    environment_name: str
    process: d.Process
    plan: p.Plan


@dataclass(frozen=True)
class Material:
    """Everything the engine reads to run a deployment task."""

    process: d.Process
    values: tuple[scopes.VariableValue, ...]
    machines: dict[str, MachineDescription]
    space_name: str
    project_guided_failure: str = "default"
    environment_guided_failure: bool = False


def _project_of(release: ReleaseRecord, repo: ModelRepository) -> d.Project:
    named = repo.names_for(d.Project.model_validate(release.snapshot["project"]))
    if not isinstance(named, d.Project):  # pragma: no cover - names_for keeps the type
        raise TypeError("not a project")
    return named


def _step_inputs(process: d.Process) -> list[p.StepInput]:
    return [
        p.StepInput(
            name=step.name,
            target_tags=tuple(step.target_tags),
            with_previous=step.start_trigger == "with_previous",
            window_size=step.window_size,
            actions=tuple(
                p.ActionInput(
                    name=a.name,
                    type=a.type,
                    environments=tuple(a.environments),
                    excluded_environments=tuple(a.excluded_environments),
                    channels=tuple(a.channels),
                    tenant_tags=tuple(a.tenant_tags),
                    disabled=a.disabled,
                    required=a.required,
                    script_from_package=a.script is not None and a.script.package is not None,
                )
                for a in step.actions
            ),
        )
        for step in process.steps
    ]


def prepare(
    releases: Releases, repo: ModelRepository, request: DeploymentRequest
) -> PreparedDeployment:
    """Check the lifecycle and plan the deployment; raises with every reason it cannot run."""
    session = repo.session
    release = releases.get(request.project, request.release)
    environment = doc_store.find(session, repo.space.id, "environment", request.environment)
    if environment is None:
        raise NotFound(f"no environment named {request.environment!r}")
    allowed, why = releases.progression(request.project, request.release).can_deploy_to(
        environment.name
    )
    if not allowed:
        raise FailedPrecondition(
            f"release {release.version} of {request.project} cannot be deployed to "
            f"{environment.name} yet: {why}"
        )
    project_id = repo.find_id("project", request.project) or ""
    project = _project_of(release, repo)
    machines = [
        p.MachineInput(
            name=m.name,
            environments=tuple(m.environments),
            roles=tuple(m.roles),
            enabled=m.enabled,
            available=m.health != "unavailable",
            tenants=tuple(m.tenants),
            tenant_tags=tuple(m.tenant_tags),
            tenanted_mode=m.tenanted_mode,
        )
        for m in machine_store.all_machines(session)
    ]
    try:
        plan = p.plan_deployment(
            _step_inputs(project.process),
            p.Target(environment.name, channel=release.channel),
            machines,
            p.Choices(request.skip_steps, request.specific_machines, request.excluded_machines),
        )
    except p.PlanProblems as exc:
        raise ValidationFailed([("", problem) for problem in exc.problems]) from None
    _check_prompts(project, request)
    return PreparedDeployment(
        release=release,
        project_id=project_id,
        project_name=project.name,
        environment_id=environment.id,
        environment_name=environment.name,
        process=project.process,
        plan=plan,
    )


def _check_prompts(project: d.Project, request: DeploymentRequest) -> None:
    given = {name.casefold() for name, _, _ in request.variables}
    missing = [
        v.name
        for v in project.variables
        if v.prompt is not None and v.prompt.required and v.name.casefold() not in given
    ]
    if missing:
        raise ValidationFailed(
            [("variables", f"the prompted variable {name!r} is required") for name in missing]
        )


def create(
    session: Session,
    prepared: PreparedDeployment,
    request: DeploymentRequest,
    encryptor: Encryptor,
    space_id: str,
    *,
    started_by: str = "",
) -> TaskRecord:
    """Store the deployment task with its tree, and record the deployment for the lifecycle."""
    deployment_id = uuid.uuid4().hex
    spec = DeploymentTaskSpec(
        space_id=space_id,
        deployment_id=deployment_id,
        project_id=prepared.project_id,
        project_name=prepared.project_name,
        release_id=prepared.release.id,
        release_version=prepared.release.version,
        channel=prepared.release.channel,
        environment_id=prepared.environment_id,
        environment_name=prepared.environment_name,
        skip_steps=request.skip_steps,
        specific_machines=request.specific_machines,
        excluded_machines=request.excluded_machines,
        guided_failure=request.guided_failure,
        prompted=tuple(
            SpecVariable(name=n, sensitive=True, sealed=encryptor.encrypt(v, n))
            if sensitive
            else SpecVariable(name=n, value=v)
            for n, v, sensitive in request.variables
        ),
    )
    nodes = [
        tasks.PlannedNode(
            NodeKind.STEP,
            step.name,
            state=NodeState.SKIPPED if step.skipped else NodeState.PENDING,
            reason=step.skipped,
            children=tuple(
                tasks.PlannedNode(
                    NodeKind.ACTION,
                    action.name,
                    state=NodeState.SKIPPED
                    if step.skipped or action.skipped
                    else NodeState.PENDING,
                    reason=step.skipped or action.skipped,
                    children=tuple(
                        tasks.PlannedNode(NodeKind.MACHINE, machine, machine)
                        for machine in (() if step.skipped or action.skipped else step.machines)
                    ),
                )
                for action in step.actions
            ),
        )
        for step in prepared.plan.steps
    ]
    task = tasks.create_task(
        session,
        description=(
            f"Deploy {prepared.project_name} release {prepared.release.version} to "
            f"{prepared.environment_name}"
        ),
        spec=spec,
        plan=nodes,
        started_by=started_by,
    )
    release_store.record_deployment(
        session,
        release_id=prepared.release.id,
        environment_id=prepared.environment_id,
        state="queued",
        task_id=task.id,
    )
    return task


def load_material(session: Session, encryptor: Encryptor, spec: DeploymentTaskSpec) -> Material:
    """The frozen process, the release's values (decrypted) and the machines, for the engine."""
    space = doc_store.get_space_by_id(session, spec.space_id)
    repo = ModelRepository(session, space, encryptor, "system")
    release = release_store.get_by_id(session, spec.release_id)
    project = _project_of(release, repo)
    values: list[scopes.VariableValue] = [_value(v, None, encryptor) for v in project.variables]
    for item in release.snapshot.get("library_variable_sets", []):
        library = repo.names_for(d.LibraryVariableSet.model_validate(item["body"]))
        if isinstance(library, d.LibraryVariableSet):
            values.extend(_value(v, str(item["name"]), encryptor) for v in library.variables)
    machines = {
        m.name.casefold(): MachineDescription(m.id, m.name, tuple(m.roles))
        for m in machine_store.all_machines(session)
    }
    environment = doc_store.get(session, spec.environment_id)
    return Material(
        project.process,
        tuple(values),
        machines,
        space.name,
        project.use_guided_failure,
        bool(environment.body.get("use_guided_failure", False)),
    )


def _value(
    variable: d.Variable, library_set: str | None, encryptor: Encryptor
) -> scopes.VariableValue:
    text = variable.value or ""
    if variable.sensitive and text:
        text = encryptor.decrypt(text, variable.name)
    scope = variable.scope
    return scopes.VariableValue(
        name=variable.name,
        value=text,
        scope=scopes.Scope.of(
            environment=scope.environments,
            role=scope.roles,
            machine=scope.machines,
            action=scope.actions,
            channel=scope.channels,
            tenant=scope.tenants,
            tenant_tag=scope.tenant_tags,
            process=scope.processes,
        ),
        sensitive=variable.sensitive,
        library_set=library_set,
    )


def set_deployment_state(session: Session, task_id: str, state: str) -> None:
    """Record how the deployment of a task ended, for lifecycle progression."""
    release_store.set_deployment_state(session, task_id, state)


def plan_lines(prepared: PreparedDeployment) -> list[str]:
    """The dry-run description."""
    return prepared.plan.describe()


def describe_json(prepared: PreparedDeployment) -> dict[str, Any]:
    """The plan as JSON for --dry-run --output json."""
    return {
        "release": prepared.release.version,
        "environment": prepared.environment_name,
        "steps": [
            {
                "name": s.name,
                "skipped": s.skipped,
                "machines": list(s.machines),
                "with_previous": s.with_previous,
                "window_size": s.window_size,
                "actions": [
                    {"name": a.name, "type": a.type, "skipped": a.skipped} for a in s.actions
                ],
            }
            for s in prepared.plan.steps
        ],
    }


def step_names(process: d.Process) -> Sequence[str]:
    """The process's step names, in order."""
    return [s.name for s in process.steps]


def latest_successful_release(
    session: Session, repo: ModelRepository, project: str, environment: str
) -> str:
    """The version last deployed with success to an environment (what promote deploys)."""
    project_id = repo.find_id("project", project)
    if project_id is None:
        raise NotFound(f"no project named {project!r}")
    found = doc_store.find(session, repo.space.id, "environment", environment)
    if found is None:
        raise NotFound(f"no environment named {environment!r}")
    try:
        return release_store.latest_successful(session, project_id, found.id).version
    except StoreNotFound:
        raise FailedPrecondition(
            f"nothing of {project} was deployed with success to {found.name} yet: "
            "there is nothing to promote"
        ) from None


def space_of_task(session: Session, task_id: str) -> str:
    """The name of the space a deployment task belongs to (rerun looks there)."""
    spec = tasks.get(session, task_id).spec
    if not isinstance(spec, DeploymentTaskSpec):
        raise FailedPrecondition(
            f"task {task_id} is not a deployment: only deployments can be rerun"
        )
    return doc_store.get_space_by_id(session, spec.space_id).name


def request_of_task(session: Session, encryptor: Encryptor, task_id: str) -> DeploymentRequest:
    """What an earlier deployment was asked with, for `task rerun` (sensitive values opened)."""
    spec = tasks.get(session, task_id).spec
    if not isinstance(spec, DeploymentTaskSpec):
        raise FailedPrecondition(
            f"task {task_id} is not a deployment: only deployments can be rerun"
        )
    environment = doc_store.get(session, spec.environment_id)
    project = doc_store.get(session, spec.project_id)
    return DeploymentRequest(
        project=project.name,
        release=spec.release_version,
        environment=environment.name,
        skip_steps=spec.skip_steps,
        specific_machines=spec.specific_machines,
        excluded_machines=spec.excluded_machines,
        variables=tuple(
            (v.name, encryptor.decrypt(v.sealed, v.name) if v.sensitive else v.value, v.sensitive)
            for v in spec.prompted
        ),
        guided_failure=spec.guided_failure,
    )

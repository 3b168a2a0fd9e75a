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

from cuttle.server.domain import package_steps as ps
from cuttle.server.domain import plan as p
from cuttle.server.domain import variable_scopes as scopes
from cuttle.server.domain.deployment_variables import MachineDescription, TenantValue
from cuttle.server.domain.task_specs import DeploymentTaskSpec, RunbookTaskSpec, SpecVariable
from cuttle.server.domain.task_states import NodeKind, NodeState
from cuttle.server.encryption import Encryptor
from cuttle.server.errors import FailedPrecondition, NotFound, ValidationFailed
from cuttle.server.model import documents as d
from cuttle.server.model.kinds import kind
from cuttle.server.model.library_set_ties import variable_value
from cuttle.server.model.releases import Releases
from cuttle.server.model.repository import ModelRepository
from cuttle.server.store import documents as doc_store
from cuttle.server.store import machines as machine_store
from cuttle.server.store import releases as release_store
from cuttle.server.store import runbook_snapshots as snapshot_store
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
    # A runbook run: the runbook's name (release then names the snapshot; empty: published).
    runbook: str = ""
    # A tenanted deployment: the tenant's name.
    tenant: str = ""


@dataclass(frozen=True)
class Source:
    """What is deployed: a release, or a runbook's published snapshot."""

    id: str
    version: str
    channel: str = ""
    # Set for a runbook run: the runbook's name.
    runbook: str = ""


@dataclass(frozen=True)
class PreparedDeployment:
    """A checked request: what is deployed, the environment and the plan."""

    source: Source
    project_id: str
    project_name: str
    environment_id: str
    environment_name: str
    process: d.Process
    plan: p.Plan
    tenant_id: str | None = None
    tenant_name: str | None = None
    tenant_tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Material:
    """Everything the engine reads to run a deployment task."""

    process: d.Process
    values: tuple[scopes.VariableValue, ...]
    machines: dict[str, MachineDescription]
    space_name: str
    project_guided_failure: str = "default"
    environment_guided_failure: bool = False
    # Octopus.Release.CurrentForEnvironment / PreviousForEnvironment: what this environment
    # had with success before this deployment, and before that ("" when none).
    current_for_environment: str = ""
    previous_for_environment: str = ""
    # The tenant's values as they are now (not part of any snapshot, as in Octopus).
    tenant_values: tuple[TenantValue, ...] = ()
    # The package versions the release recorded (model/release_packages.py).
    packages: tuple[ps.ReleasePackage, ...] = ()


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
                )
                for a in step.actions
            ),
        )
        for step in process.steps
    ]


def prepare_runbook(
    repo: ModelRepository, request: DeploymentRequest, worker: p.Worker = p.NO_WORKER
) -> PreparedDeployment:
    """Plan a runbook run on its published snapshot (or the one named); no lifecycle applies."""
    session = repo.session
    project_id = repo.find_id("project", request.project)
    if project_id is None:
        raise NotFound(f"no project named {request.project!r}")
    snapshots = snapshot_store.list_for(session, project_id, request.runbook)
    if not snapshots:
        # A runbook that does not exist is a wrong name, not one waiting to be published.
        project = repo.get(kind("project"), request.project).spec
        names = [r.name for r in project.runbooks] if isinstance(project, d.Project) else []
        if request.runbook.casefold() not in {n.casefold() for n in names}:
            raise NotFound(
                f"project {request.project!r} has no runbook {request.runbook!r} "
                f"(it has: {', '.join(names) or 'none'})"
            )
        raise FailedPrecondition(
            f"runbook {request.runbook!r} of {request.project} has no published snapshot: "
            "publish it with `cuttle runbook publish` first"
        )
    wanted = request.release.casefold()
    chosen = next(
        (s for s in snapshots if (s.name.casefold() == wanted if wanted else s.published)),
        None,
    )
    if chosen is None:
        raise NotFound(f"runbook {request.runbook!r} has no snapshot named {request.release!r}")
    environment = doc_store.find(session, repo.space.id, "environment", request.environment)
    if environment is None:
        raise NotFound(f"no environment named {request.environment!r}")
    frozen = dict(chosen.snapshot["project"])
    frozen["runbooks"] = [chosen.snapshot["runbook"]]
    project = repo.names_for(d.Project.model_validate(frozen))
    if not isinstance(project, d.Project):  # pragma: no cover - names_for keeps the type
        raise TypeError("not a project")
    runbook = project.runbooks[0]
    allowed = {e.casefold() for e in runbook.environments}
    if allowed and environment.name.casefold() not in allowed:
        raise FailedPrecondition(
            f"runbook {runbook.name!r} runs only in {', '.join(runbook.environments)}, "
            f"not {environment.name}"
        )
    as_process = project.model_copy(update={"process": runbook.process})
    plan = _plan(as_process, environment.name, "", request, repo, worker=worker)
    _check_packages(
        chosen.snapshot, f"snapshot {chosen.name} of runbook {runbook.name}", runbook.process, plan
    )
    return PreparedDeployment(
        source=Source(chosen.id, chosen.name, runbook=runbook.name),
        project_id=project_id,
        project_name=project.name,
        environment_id=environment.id,
        environment_name=environment.name,
        process=runbook.process,
        plan=plan,
    )


def _plan(
    project: d.Project,
    environment: str,
    channel: str,
    request: DeploymentRequest,
    repo: ModelRepository,
    *,
    tenant: tuple[str, tuple[str, ...]] | None = None,
    worker: p.Worker = p.NO_WORKER,
) -> p.Plan:
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
        for m in machine_store.all_machines(repo.session)
    ]
    try:
        plan = p.plan_deployment(
            _step_inputs(project.process),
            p.Target(
                environment,
                channel=channel,
                tenant=None if tenant is None else tenant[0],
                tenant_tags=() if tenant is None else tenant[1],
            ),
            machines,
            p.Choices(request.skip_steps, request.specific_machines, request.excluded_machines),
            worker,
        )
    except p.PlanProblems as exc:
        raise ValidationFailed([("", problem) for problem in exc.problems]) from None
    _check_prompts(project, request)
    return plan


def prepare(
    releases: Releases,
    repo: ModelRepository,
    request: DeploymentRequest,
    worker: p.Worker = p.NO_WORKER,
) -> PreparedDeployment:
    """Check the lifecycle and plan the deployment; raises with every reason it cannot run."""
    session = repo.session
    release = releases.get(request.project, request.release)
    environment = doc_store.find(session, repo.space.id, "environment", request.environment)
    if environment is None:
        raise NotFound(f"no environment named {request.environment!r}")
    project_id = repo.find_id("project", request.project) or ""
    project = _project_of(release, repo)
    tenant = _tenant(repo, project, environment.name, request.tenant)
    # Each tenant goes through the lifecycle on its own (and untenanted deployments on theirs).
    progression = releases.progression(
        request.project, request.release, None if tenant is None else tenant[0]
    )
    allowed, why = progression.can_deploy_to(environment.name)
    if not allowed:
        raise FailedPrecondition(
            f"release {release.version} of {request.project} cannot be deployed to "
            f"{environment.name}"
            + (f" for tenant {tenant[1].name}" if tenant is not None else "")
            + f" yet: {why}"
        )
    plan = _plan(
        project,
        environment.name,
        release.channel,
        request,
        repo,
        tenant=None if tenant is None else (tenant[1].name, tuple(tenant[1].tags)),
        worker=worker,
    )
    _check_packages(release.snapshot, f"release {release.version}", project.process, plan)
    return PreparedDeployment(
        source=Source(release.id, release.version, release.channel),
        project_id=project_id,
        project_name=project.name,
        environment_id=environment.id,
        environment_name=environment.name,
        process=project.process,
        plan=plan,
        tenant_id=None if tenant is None else tenant[0],
        tenant_name=None if tenant is None else tenant[1].name,
        tenant_tags=() if tenant is None else tuple(tenant[1].tags),
    )


def package_uses(process: d.Process, plan: p.Plan) -> list[tuple[str, str, str]]:
    """(step, action, use) of every planned action that runs and takes a package."""
    found: list[tuple[str, str, str]] = []
    for planned in plan.steps:
        if planned.skipped:
            continue
        step = next((s for s in process.steps if s.name == planned.name), None)
        if step is None:
            continue
        for planned_action in planned.actions:
            if planned_action.skipped:
                continue
            action = next((a for a in step.actions if a.name == planned_action.name), None)
            if action is None:
                continue
            if action.package is not None:
                found.append((step.name, action.name, "package"))
            if action.script is not None and action.script.package is not None:
                found.append((step.name, action.name, "script"))
    return found


def _check_packages(snapshot: dict[str, Any], what: str, process: d.Process, plan: p.Plan) -> None:
    """Refuse a deployment whose package actions have no version recorded in the snapshot."""
    using = package_uses(process, plan)
    if not using:
        return
    packages = ps.recorded(snapshot)
    new = "publish a new snapshot" if what.startswith("snapshot") else "create a new release"
    if packages is None:
        raise FailedPrecondition(
            f"{what} was created before Cuttle recorded package versions, and its process "
            f"deploys packages: {new}"
        )
    missing = [
        f"{step} / {action}"
        for step, action, use in using
        if ps.package_of(packages, step, action, use) is None
    ]
    if missing:
        raise FailedPrecondition(
            f"{what} records no package version for {', '.join(missing)}: {new}"
        )


def _tenant(
    repo: ModelRepository, project: d.Project, environment: str, name: str
) -> tuple[str, d.Tenant] | None:
    """The tenant of a tenanted deployment, checked against the project's tenanted mode."""
    if not name:
        if project.tenanted_mode == "tenanted":
            raise FailedPrecondition(
                f"project {project.name!r} is deployed per tenant: say which with --tenant"
            )
        return None
    if project.tenanted_mode == "untenanted":
        raise FailedPrecondition(f"project {project.name!r} is not deployed per tenant")
    found = doc_store.find(repo.session, repo.space.id, "tenant", name)
    if found is None:
        raise NotFound(f"no tenant named {name!r}")
    tenant = repo.names_for(d.Tenant.model_validate(found.body))
    if not isinstance(tenant, d.Tenant):  # pragma: no cover - names_for keeps the type
        raise TypeError("not a tenant")
    connected = [c for c in tenant.projects if c.project.casefold() == project.name.casefold()]
    if not any(environment.casefold() in {e.casefold() for e in c.environments} for c in connected):
        raise FailedPrecondition(
            f"tenant {tenant.name!r} is not connected to {project.name} in {environment}"
        )
    return found.id, tenant


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
    spec_type = RunbookTaskSpec if prepared.source.runbook else DeploymentTaskSpec
    extra = {"runbook": prepared.source.runbook} if prepared.source.runbook else {}
    spec = spec_type(
        **extra,  # type: ignore[arg-type]
        space_id=space_id,
        deployment_id=deployment_id,
        project_id=prepared.project_id,
        project_name=prepared.project_name,
        release_id=prepared.source.id,
        release_version=prepared.source.version,
        channel=prepared.source.channel,
        environment_id=prepared.environment_id,
        environment_name=prepared.environment_name,
        skip_steps=request.skip_steps,
        specific_machines=request.specific_machines,
        excluded_machines=request.excluded_machines,
        guided_failure=request.guided_failure,
        tenant_id=prepared.tenant_id,
        tenant_name=prepared.tenant_name,
        tenant_tags=prepared.tenant_tags,
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
    acquiring = _acquisition_machines(prepared)
    if acquiring:
        # Before every step: the machines that deploy packages get them first (Octopus's
        # "Acquire packages"); spec.acquire_packages tells the engine the first step is this.
        nodes.insert(
            0,
            tasks.PlannedNode(
                NodeKind.STEP,
                ps.ACQUIRE_STEP,
                children=(
                    tasks.PlannedNode(
                        NodeKind.ACTION,
                        ps.ACQUIRE_STEP,
                        children=tuple(
                            tasks.PlannedNode(NodeKind.MACHINE, machine, machine)
                            for machine in acquiring
                        ),
                    ),
                ),
            ),
        )
        spec = spec.model_copy(update={"acquire_packages": True})
    task = tasks.create_task(
        session,
        description=(
            f"Run {prepared.project_name} runbook {prepared.source.runbook} "
            f"({prepared.source.version}) in {prepared.environment_name}"
            if prepared.source.runbook
            else f"Deploy {prepared.project_name} release {prepared.source.version} to "
            f"{prepared.environment_name}"
        ),
        spec=spec,
        plan=nodes,
        started_by=started_by,
    )
    if prepared.source.runbook:
        return task  # runbook runs are not deployments of a release: no lifecycle to move
    release_store.record_deployment(
        session,
        release_id=prepared.source.id,
        environment_id=prepared.environment_id,
        state="queued",
        tenant_id=prepared.tenant_id,
        task_id=task.id,
    )
    return task


def _acquisition_machines(prepared: PreparedDeployment) -> list[str]:
    """The machines of every running step that deploys a package, in first-seen order."""
    using = {(step, action) for step, action, _ in package_uses(prepared.process, prepared.plan)}
    machines: dict[str, None] = {}
    for step in prepared.plan.steps:
        if any((step.name, a.name) in using for a in step.actions):
            machines.update(dict.fromkeys(step.machines))
    return list(machines)


def load_material(session: Session, encryptor: Encryptor, spec: DeploymentTaskSpec) -> Material:
    """The frozen process, the release's values (decrypted) and the machines, for the engine."""
    space = doc_store.get_space_by_id(session, spec.space_id)
    repo = ModelRepository(session, space, encryptor, "system")
    if isinstance(spec, RunbookTaskSpec):
        snapshot = snapshot_store.get_by_id(session, spec.release_id).snapshot
        frozen = dict(snapshot["project"])
        frozen["runbooks"] = [snapshot["runbook"]]
        named = repo.names_for(d.Project.model_validate(frozen))
        if not isinstance(named, d.Project):  # pragma: no cover - names_for keeps the type
            raise TypeError("not a project")
        project = named.model_copy(update={"process": named.runbooks[0].process})
    else:
        release = release_store.get_by_id(session, spec.release_id)
        snapshot = release.snapshot
        project = _project_of(release, repo)
    packages = ps.recorded(snapshot) or ()
    values: list[scopes.VariableValue] = [
        variable_value(v, None, encryptor) for v in project.variables
    ]
    for item in snapshot.get("library_variable_sets", []):
        library = repo.names_for(d.LibraryVariableSet.model_validate(item["body"]))
        if isinstance(library, d.LibraryVariableSet):
            values.extend(
                variable_value(v, str(item["name"]), encryptor) for v in library.variables
            )
    machines = {
        m.name.casefold(): MachineDescription(m.id, m.name, tuple(m.roles))
        for m in machine_store.all_machines(session)
    }
    machines[p.BUILTIN_WORKER] = MachineDescription(p.BUILTIN_WORKER, p.BUILTIN_WORKER)
    environment = doc_store.get(session, spec.environment_id)
    earlier = (
        []
        if isinstance(spec, RunbookTaskSpec)
        else [
            v
            for v in release_store.successful_versions(
                session, spec.project_id, spec.environment_id
            )
            if v != spec.release_version
        ]
    )
    return Material(
        project.process,
        tuple(values),
        machines,
        space.name,
        project.use_guided_failure,
        bool(environment.body.get("use_guided_failure", False)),
        earlier[0] if earlier else "",
        earlier[1] if len(earlier) > 1 else "",
        _tenant_values(session, repo, encryptor, spec.tenant_id),
        packages,
    )


def _tenant_values(
    session: Session, repo: ModelRepository, encryptor: Encryptor, tenant_id: str | None
) -> tuple[TenantValue, ...]:
    if tenant_id is None:
        return ()
    tenant = repo.names_for(d.Tenant.model_validate(doc_store.get(session, tenant_id).body))
    if not isinstance(tenant, d.Tenant):  # pragma: no cover - names_for keeps the type
        raise TypeError("not a tenant")
    return tuple(
        TenantValue(
            name=v.name,
            value=encryptor.decrypt(v.value, v.name) if v.sensitive and v.value else v.value or "",
            sensitive=v.sensitive,
            project=v.project,
            environment=v.environment,
        )
        for v in tenant.variables
    )


def set_deployment_state(session: Session, task_id: str, state: str) -> None:
    """Record how the deployment of a task ended, for lifecycle progression (runbook runs,
    which move no lifecycle, have no deployment to record)."""
    if isinstance(tasks.get(session, task_id).spec, RunbookTaskSpec):
        return
    release_store.set_deployment_state(session, task_id, state)


def plan_lines(prepared: PreparedDeployment) -> list[str]:
    """The dry-run description."""
    return prepared.plan.describe()


def describe_json(prepared: PreparedDeployment) -> dict[str, Any]:
    """The plan as JSON for --dry-run --output json."""
    return {
        "release": prepared.source.version,
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
        runbook=spec.runbook if isinstance(spec, RunbookTaskSpec) else "",
        tenant=spec.tenant_name or "",
    )

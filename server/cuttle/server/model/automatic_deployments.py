"""Automatic phases: a release deploys by itself to a phase's automatic environments.

When a release is created, and whenever one of its deployments succeeds, every automatic
environment of an open phase that has no deployment of the release yet gets one, queued like a
deployment a person asked for (and planned the same way, so one that cannot run is not queued:
the reason is an audit event). A failed automatic deployment is not retried on its own, as in
Octopus. A tenanted project goes through the lifecycle per tenant, as in Octopus: each tenant
connected to the project in an automatic environment gets its own deployment there once its
own deployments opened the phase (and untenanted deployments of a project that allows them
progress on their own).
"""

from __future__ import annotations

import structlog
from sqlalchemy.orm import Session

from cuttle.server.domain.plan import NO_WORKER, Worker
from cuttle.server.encryption import Encryptor
from cuttle.server.errors import ServerError
from cuttle.server.model import deployments
from cuttle.server.model import documents as d
from cuttle.server.model.releases import ALL_TENANTS, AllTenants, Releases
from cuttle.server.model.repository import ModelRepository
from cuttle.server.store import documents as doc_store
from cuttle.server.store import events
from cuttle.server.store.records import TaskRecord

log = structlog.get_logger(__name__)

# Who the audit trail and `task list` name as having started an automatic deployment.
ACTOR = "lifecycle (automatic)"


def queue_automatic(
    session: Session,
    encryptor: Encryptor,
    space_id: str,
    project: str,
    version: str,
    worker: Worker = NO_WORKER,
    tenant_id: str | None | AllTenants = ALL_TENANTS,
) -> list[TaskRecord]:
    """Queue the automatic deployments the release's lifecycle now calls for; returns them.

    `tenant_id` narrows it to one tenant's progression (None: the untenanted one), after a
    deployment of that tenant succeeded; by default every tenant's and the untenanted one.
    """
    space = doc_store.get_space_by_id(session, space_id)
    repo = ModelRepository(session, space, encryptor, ACTOR)
    releases = Releases(repo, ACTOR)
    queued: list[TaskRecord] = []
    for tenant in _progressions(repo, project, tenant_id):
        queued.extend(
            _queue_for(session, encryptor, releases, repo, project, version, worker, tenant)
        )
    return queued


def _progressions(
    repo: ModelRepository, project: str, tenant_id: str | None | AllTenants
) -> list[tuple[str, str, frozenset[str]] | None]:
    """Whose progressions to look at: None (untenanted) and (tenant id, name, environments)."""
    found = doc_store.find(repo.session, repo.space.id, "project", project)
    if found is None:
        return []
    mode = str(found.body.get("tenanted_mode", "untenanted"))
    wanted: list[tuple[str, str, frozenset[str]] | None] = []
    if mode != "tenanted" and (isinstance(tenant_id, AllTenants) or tenant_id is None):
        wanted.append(None)
    if mode == "untenanted":
        return wanted
    for record in doc_store.all_of_kind(repo.session, repo.space.id, "tenant"):
        if not isinstance(tenant_id, AllTenants) and record.id != tenant_id:
            continue
        tenant = repo.names_for(d.Tenant.model_validate(record.body))
        if not isinstance(tenant, d.Tenant):  # pragma: no cover - names_for keeps the type
            continue
        environments = frozenset(
            e.casefold()
            for c in tenant.projects
            if c.project.casefold() == project.casefold()
            for e in c.environments
        )
        if environments:
            wanted.append((record.id, tenant.name, environments))
    return wanted


def _queue_for(
    session: Session,
    encryptor: Encryptor,
    releases: Releases,
    repo: ModelRepository,
    project: str,
    version: str,
    worker: Worker,
    tenant: tuple[str, str, frozenset[str]] | None,
) -> list[TaskRecord]:
    space_id = repo.space.id
    progression = releases.progression(project, version, None if tenant is None else tenant[0])
    queued: list[TaskRecord] = []
    for environment_id in progression.automatic_environments:
        environment = progression.name_of(environment_id)
        if tenant is not None and environment.casefold() not in tenant[2]:
            continue  # the tenant is not connected there: nothing to deploy, nothing to say
        ask = deployments.DeploymentRequest(
            project=project,
            release=version,
            environment=environment,
            tenant="" if tenant is None else tenant[1],
        )
        target = environment if tenant is None else f"{environment} for tenant {tenant[1]}"
        try:
            prepared = deployments.prepare(releases, repo, ask, worker)
        except ServerError as exc:
            log.warning(
                "automatic_deployment_refused",
                project=project,
                release=version,
                environment=target,
                reason=str(exc),
            )
            _record(
                session,
                space_id,
                project,
                version,
                environment,
                f"Automatic deployment of {project} release {version} to {target} was "
                f"not started: {exc}",
                None,
            )
            continue
        task = deployments.create(session, prepared, ask, encryptor, space_id, started_by=ACTOR)
        _record(
            session,
            space_id,
            project,
            version,
            environment,
            f"Deployed {project} release {version} to {target} automatically (task {task.id})",
            task.id,
        )
        queued.append(task)
    return queued


def _record(
    session: Session,
    space_id: str,
    project: str,
    version: str,
    environment: str,
    message: str,
    task_id: str | None,
) -> None:
    events.record(
        session,
        space_id=space_id,
        actor=ACTOR,
        category="deployed",
        kind="release",
        document_id=None,
        document_name=f"{project} {version}",
        message=message,
        details={
            "project": project,
            "version": version,
            "environment": environment,
            "task_id": task_id or "",
            "automatic": True,
        },
    )

"""Automatic phases: a release deploys by itself to a phase's automatic environments.

When a release is created, and whenever one of its deployments succeeds, every automatic
environment of an open phase that has no deployment of the release yet gets one, queued like a
deployment a person asked for (and planned the same way, so one that cannot run is not queued:
the reason is an audit event). A failed automatic deployment is not retried on its own, as in
Octopus. Tenanted automatic deployment is not offered yet: only untenanted deployments start.
"""

from __future__ import annotations

import structlog
from sqlalchemy.orm import Session

from cuttle.server.domain.plan import NO_WORKER, Worker
from cuttle.server.encryption import Encryptor
from cuttle.server.errors import ServerError
from cuttle.server.model import deployments
from cuttle.server.model.releases import Releases
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
) -> list[TaskRecord]:
    """Queue the automatic deployments the release's lifecycle now calls for; returns them."""
    space = doc_store.get_space_by_id(session, space_id)
    repo = ModelRepository(session, space, encryptor, ACTOR)
    releases = Releases(repo, ACTOR)
    progression = releases.progression(project, version)
    queued: list[TaskRecord] = []
    for environment_id in progression.automatic_environments:
        environment = progression.name_of(environment_id)
        ask = deployments.DeploymentRequest(
            project=project, release=version, environment=environment
        )
        try:
            prepared = deployments.prepare(releases, repo, ask, worker)
        except ServerError as exc:
            log.warning(
                "automatic_deployment_refused",
                project=project,
                release=version,
                environment=environment,
                reason=str(exc),
            )
            _record(
                session,
                space_id,
                project,
                version,
                environment,
                f"Automatic deployment of {project} release {version} to {environment} was "
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
            f"Deployed {project} release {version} to {environment} automatically (task {task.id})",
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

"""ReleaseService: create, read, list, delete releases, re-snapshot variables, progression."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from sqlalchemy.orm import Session

from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.protocol.v1 import model_pb2_grpc
from cuttle.server.api import access
from cuttle.server.api.access import Principal
from cuttle.server.domain.plan import NO_WORKER, Worker
from cuttle.server.encryption import Encryptor
from cuttle.server.errors import PermissionDenied
from cuttle.server.model.automatic_deployments import queue_automatic
from cuttle.server.model.releases import Releases
from cuttle.server.model.repository import ModelRepository
from cuttle.server.store import documents as doc_store
from cuttle.server.store.releases import ReleaseRecord
from cuttle.server.store.runbook_snapshots import RunbookSnapshotRecord
from cuttle.server.store.transactions import Transactions

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")


def release_message(record: ReleaseRecord, project: str, snapshot_json: str = "") -> mpb.Release:
    """The wire form of a release."""
    return mpb.Release(
        id=record.id,
        project=project,
        version=record.version,
        channel=record.channel,
        notes=record.notes,
        created_unix_ms=record.created_ms,
        created_by=record.created_by,
        variables_snapshot_unix_ms=record.variables_snapshot_ms,
        snapshot_json=snapshot_json,
    )


class ReleaseService(model_pb2_grpc.ReleaseServiceServicer):
    """Releases of projects; every call is authorized for the project."""

    def __init__(
        self,
        tx: Transactions,
        encryptor: Encryptor,
        queued: Callable[[str], None] = lambda _task_id: None,
        worker: Callable[[], Worker] = lambda: NO_WORKER,
    ) -> None:
        self._tx = tx
        self._encryptor = encryptor
        # Told of each automatic deployment the new release queued, to start it now.
        self._queued = queued
        self._worker = worker

    async def _run(
        self,
        space: str,
        project: str,
        roles: tuple[str, ...],
        action: str,
        work: Callable[[Releases], T],
    ) -> T:
        return await run_for_project(self._tx, self._encryptor, space, project, roles, action, work)

    async def CreateRelease(
        self, request: mpb.CreateReleaseRequest, context: Context
    ) -> mpb.Release:  # noqa: N802
        """Create a release; the version must fit the channel's rules."""

        encryptor, worker = self._encryptor, self._worker()
        automatic: list[str] = []

        def work(releases: Releases) -> mpb.Release:
            automatic.clear()  # a retried transaction starts over
            record = releases.create(
                request.project, request.version, request.channel, request.notes
            )
            session = releases.session
            for task in queue_automatic(
                session, encryptor, releases.space_id, request.project, record.version, worker
            ):
                automatic.append(task.id)
            return release_message(record, request.project)

        made = await self._run(
            request.space, request.project, ("deploy", "edit"), "create releases", work
        )
        for task_id in automatic:
            self._queued(task_id)
        return made

    async def GetRelease(self, request: mpb.GetReleaseRequest, context: Context) -> mpb.Release:  # noqa: N802
        """One release with its snapshot (names, sensitive values null)."""

        def work(releases: Releases) -> mpb.Release:
            record = releases.get(request.project, request.version)
            view = releases.view(record, request.project)
            snapshot = {
                "process": view.process.model_dump(mode="json", exclude_defaults=True),
                "variables": [
                    x.model_dump(mode="json", exclude_defaults=True) for x in view.variables
                ],
                "library_variable_sets": list(view.library_variable_sets),
            }
            return release_message(record, request.project, json.dumps(snapshot))

        return await self._run(request.space, request.project, ("view",), "view releases", work)

    async def ListReleases(
        self, request: mpb.ListReleasesRequest, context: Context
    ) -> mpb.ListReleasesResponse:  # noqa: N802
        """A project's releases, newest first, paged."""

        def work(releases: Releases) -> mpb.ListReleasesResponse:
            page = releases.list_page(
                request.project,
                request.channel,
                request.page_size or 50,
                request.page_token or None,
            )
            return mpb.ListReleasesResponse(
                releases=[release_message(r, request.project) for r in page.items],
                next_page_token=page.next_page_token or "",
            )

        return await self._run(request.space, request.project, ("view",), "view releases", work)

    async def DeleteRelease(
        self, request: mpb.GetReleaseRequest, context: Context
    ) -> mpb.DeleteReleaseResponse:  # noqa: N802
        """Delete a release and its deployment history."""

        def work(releases: Releases) -> None:
            releases.delete(request.project, request.version)

        await self._run(request.space, request.project, ("edit",), "delete releases", work)
        return mpb.DeleteReleaseResponse()

    async def UpdateReleaseVariables(
        self, request: mpb.GetReleaseRequest, context: Context
    ) -> mpb.Release:  # noqa: N802
        """Re-take a release's variable snapshot from the project as it is now."""

        def work(releases: Releases) -> mpb.Release:
            record = releases.update_variables(request.project, request.version)
            return release_message(record, request.project)

        return await self._run(
            request.space, request.project, ("edit",), "update release variables", work
        )

    async def GetProgression(
        self, request: mpb.GetReleaseRequest, context: Context
    ) -> mpb.Progression:  # noqa: N802
        """Which phases are complete and where the release may go next."""

        def work(releases: Releases) -> mpb.Progression:
            progress = releases.progression(request.project, request.version)
            names = progress.name_of
            every = list(dict.fromkeys(e for p in progress.phases for e in p.environments))
            return mpb.Progression(
                lifecycle=progress.lifecycle_name,
                phases=[
                    mpb.PhaseProgress(
                        name=p.name,
                        environments=[names(e) for e in p.environments],
                        deployed_environments=[names(e) for e in p.deployed_environments],
                        required=p.required,
                        optional=p.is_optional,
                        complete=p.is_complete,
                        open=p.is_open,
                    )
                    for p in progress.phases
                ],
                allowed_environments=[names(e) for e in progress.allowed_environments],
                next_environments=[names(e) for e in progress.next_environments],
                automatic_environments=[names(e) for e in progress.automatic_environments],
                deployed_environments=[names(e) for e in progress.deployed_environments],
                reasons={names(e): progress.can_deploy_to(e)[1] for e in every},
            )

        return await self._run(request.space, request.project, ("view",), "view releases", work)


async def run_for_project(
    tx: Transactions,
    encryptor: Encryptor,
    space: str,
    project: str,
    roles: tuple[str, ...],
    action: str,
    work: Callable[[Releases], T],
) -> T:
    """Run work in one transaction once the caller holds one of roles for the project."""
    caller = access.current()

    def transaction(session: Session) -> T:
        space_record = doc_store.get_space(session, space or doc_store.DEFAULT_SPACE)
        who = caller.in_space(space_record.id)
        repo = ModelRepository(session, space_record, encryptor, who.name)
        project_id = repo.find_id("project", project)
        _require_any(who, roles, project_id or "", project, action)
        return work(Releases(repo, who.name))

    return await tx.run(transaction)


class RunbookService(model_pb2_grpc.RunbookServiceServicer):
    """Publishing runbook snapshots (edit on the project) and listing them (view)."""

    def __init__(self, tx: Transactions, encryptor: Encryptor) -> None:
        self._tx = tx
        self._encryptor = encryptor

    async def PublishRunbook(
        self, request: mpb.PublishRunbookRequest, context: Context
    ) -> mpb.RunbookSnapshot:  # noqa: N802
        """Freeze the runbook as it is now and make that what runs."""

        def work(releases: Releases) -> mpb.RunbookSnapshot:
            record = releases.publish_runbook(request.project, request.runbook, request.name)
            return _snapshot_message(record, request.project)

        return await run_for_project(
            self._tx,
            self._encryptor,
            request.space,
            request.project,
            ("edit",),
            "publish runbooks",
            work,
        )

    async def ListRunbookSnapshots(
        self, request: mpb.ListRunbookSnapshotsRequest, context: Context
    ) -> mpb.ListRunbookSnapshotsResponse:  # noqa: N802
        """A runbook's snapshots, newest first."""

        def work(releases: Releases) -> mpb.ListRunbookSnapshotsResponse:
            records = releases.runbook_snapshots(request.project, request.runbook)
            return mpb.ListRunbookSnapshotsResponse(
                snapshots=[_snapshot_message(r, request.project) for r in records]
            )

        return await run_for_project(
            self._tx,
            self._encryptor,
            request.space,
            request.project,
            ("view",),
            "view runbooks",
            work,
        )


def _snapshot_message(record: RunbookSnapshotRecord, project: str) -> mpb.RunbookSnapshot:
    return mpb.RunbookSnapshot(
        id=record.id,
        project=project,
        runbook=record.runbook,
        name=record.name,
        published=record.published,
        created_unix_ms=record.created_ms,
        created_by=record.created_by,
    )


def _require_any(
    who: Principal, roles: tuple[str, ...], project_id: str, project: str, action: str
) -> None:
    if any(who.can(role, project=project_id) for role in roles):
        return
    needed = " or ".join(roles)
    raise PermissionDenied(
        f"{who.name!r} needs the {needed} role for project {project!r} to {action}"
    )

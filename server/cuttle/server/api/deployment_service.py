"""The deployment service: thin handlers that authorize, plan and hand the task to the engine."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

import grpc
import structlog
from sqlalchemy.orm import Session

from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.protocol.v1 import model_pb2_grpc
from cuttle.server.api import access
from cuttle.server.domain.plan import NO_WORKER, Worker
from cuttle.server.encryption import Encryptor
from cuttle.server.engine.runner import TaskRunner
from cuttle.server.errors import InvalidArgument
from cuttle.server.model import deployments
from cuttle.server.model.releases import Releases
from cuttle.server.model.repository import ModelRepository
from cuttle.server.store import documents as doc_store
from cuttle.server.store import events
from cuttle.server.store.records import TaskRecord
from cuttle.server.store.transactions import Transactions

log = structlog.get_logger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]


def _guided_failure(value: str) -> Literal["default", "on", "off"]:
    if value in ("", "default"):
        return "default"
    if value == "on":
        return "on"
    if value == "off":
        return "off"
    raise InvalidArgument(f"guided failure must be on, off or default, not {value!r}")


def _require(**fields: str) -> None:
    """Refuse a request that leaves a needed name empty, saying which."""
    for field, value in fields.items():
        if not value.strip():
            raise InvalidArgument(f"{field.replace('_', ' ')} is empty: say which to use")


def _choices(request: mpb.DeployRequest | mpb.RunRunbookRequest) -> dict[str, Any]:
    """The deploy-time choices a deployment and a runbook run share."""
    return {
        "skip_steps": tuple(request.skip_steps),
        "specific_machines": tuple(request.specific_machines),
        "excluded_machines": tuple(request.excluded_machines),
        "variables": tuple((v.name, v.value, v.sensitive) for v in request.variables),
        "guided_failure": _guided_failure(request.guided_failure),
    }


class DeploymentService(model_pb2_grpc.DeploymentServiceServicer):
    """Implements DeploymentService over the model and the task runner."""

    def __init__(
        self,
        tx: Transactions,
        encryptor: Encryptor,
        runner: TaskRunner,
        worker: Callable[[], Worker] = lambda: NO_WORKER,
    ) -> None:
        self._tx = tx
        self._encryptor = encryptor
        self._runner = runner
        self._worker = worker

    async def Deploy(self, request: mpb.DeployRequest, context: Context) -> mpb.DeployResponse:  # noqa: N802
        """Plan a deployment; unless it is a dry run, queue it and start it."""
        _require(project=request.project, release=request.release, environment=request.environment)
        ask = deployments.DeploymentRequest(
            project=request.project,
            release=request.release,
            environment=request.environment,
            tenant=request.tenant,
            **_choices(request),
        )
        return await self._deploy(request.space, lambda _s, _r: ask, request.dry_run, "deployed")

    async def Promote(self, request: mpb.PromoteRequest, context: Context) -> mpb.DeployResponse:  # noqa: N802
        """Deploy to one environment what was last deployed with success to another."""
        _require(
            project=request.project,
            from_environment=request.from_environment,
            to_environment=request.to_environment,
        )

        def ask(session: Session, repo: ModelRepository) -> deployments.DeploymentRequest:
            release = deployments.latest_successful_release(
                session, repo, request.project, request.from_environment
            )
            return deployments.DeploymentRequest(
                project=request.project,
                release=release,
                environment=request.to_environment,
            )

        return await self._deploy(request.space, ask, request.dry_run, "promoted")

    async def RunRunbook(  # noqa: N802
        self, request: mpb.RunRunbookRequest, context: Context
    ) -> mpb.DeployResponse:
        """Run a runbook's published snapshot (or a named one) in an environment it allows."""
        _require(project=request.project, runbook=request.runbook, environment=request.environment)
        ask = deployments.DeploymentRequest(
            project=request.project,
            release=request.snapshot,
            environment=request.environment,
            runbook=request.runbook,
            **_choices(request),
        )
        return await self._deploy(request.space, lambda _s, _r: ask, request.dry_run, "ran")

    async def Rerun(self, request: mpb.RerunRequest, context: Context) -> mpb.DeployResponse:  # noqa: N802
        """Deploy again with everything an earlier deployment task was given."""
        encryptor = self._encryptor
        space_name = await self._tx.read(lambda s: deployments.space_of_task(s, request.task_id))

        def ask(session: Session, repo: ModelRepository) -> deployments.DeploymentRequest:
            return deployments.request_of_task(session, encryptor, request.task_id)

        return await self._deploy(space_name, ask, False, "redeployed")

    async def _deploy(
        self,
        space_name: str,
        ask_for: Callable[[Session, ModelRepository], deployments.DeploymentRequest],
        dry_run: bool,
        verb: str,
    ) -> mpb.DeployResponse:
        caller = access.current()
        encryptor = self._encryptor
        worker = self._worker()

        def work(session: Session) -> tuple[deployments.PreparedDeployment, TaskRecord | None]:
            space = doc_store.get_space(session, space_name or doc_store.DEFAULT_SPACE)
            who = caller.in_space(space.id)
            repo = ModelRepository(session, space, encryptor, who.name)
            ask = ask_for(session, repo)
            project_id = repo.find_id("project", ask.project) or ""
            environment_id = repo.find_id("environment", ask.environment) or ""
            who.require(
                "deploy",
                project=(project_id, ask.project),
                environment=(environment_id, ask.environment),
                action="deploy",
            )
            if ask.runbook:
                prepared = deployments.prepare_runbook(repo, ask, worker)
            else:
                prepared = deployments.prepare(Releases(repo, who.name), repo, ask, worker)
            if dry_run:
                return prepared, None
            task = deployments.create(
                session, prepared, ask, encryptor, space.id, started_by=who.name
            )
            events.record(
                session,
                space_id=space.id,
                actor=who.name,
                category=verb,
                kind="runbook" if prepared.source.runbook else "release",
                document_id=None if prepared.source.runbook else prepared.source.id,
                document_name=f"{prepared.project_name} {prepared.source.version}",
                message=(
                    f"Ran runbook {prepared.source.runbook} ({prepared.source.version}) of "
                    f"{prepared.project_name} in {prepared.environment_name} (task {task.id})"
                    if prepared.source.runbook
                    else f"{verb.capitalize()} {prepared.project_name} release "
                    f"{prepared.source.version} to {prepared.environment_name} (task {task.id})"
                ),
                details={
                    "project": prepared.project_name,
                    "version": prepared.source.version,
                    "environment": prepared.environment_name,
                    "task_id": task.id,
                },
            )
            return prepared, task

        prepared, task = await self._tx.run(work)
        plan = deployments.plan_lines(prepared)
        plan_json = json.dumps(deployments.describe_json(prepared))
        version = prepared.source.version
        if task is None:
            return mpb.DeployResponse(
                state="planned", plan=plan, plan_json=plan_json, release=version
            )
        log.info("deployment_queued", task_id=task.id, release=version)
        self._runner.start_task(task.id)
        return mpb.DeployResponse(
            task_id=task.id, state=task.state.value, plan=plan, plan_json=plan_json, release=version
        )

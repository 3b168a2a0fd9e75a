"""The interruption service: people list what waits for them and answer it, authorized.

Guided failure is answered by whoever may deploy the project to that environment. A manual
intervention is answered by a member of one of its responsible teams, or, when it names none,
by anyone with the approve role in that environment (server administrators always may).
Every answer is an audit event.
"""

from __future__ import annotations

from typing import Any

import grpc
import structlog
from sqlalchemy.orm import Session

from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.protocol.v1 import model_pb2_grpc
from cuttle.server.api import access
from cuttle.server.api.access import Principal
from cuttle.server.domain.interruptions import InterruptionKind, Response, may_answer_manual
from cuttle.server.domain.task_specs import DeploymentTaskSpec
from cuttle.server.engine.notifications import TaskSignals
from cuttle.server.errors import InvalidArgument, PermissionDenied
from cuttle.server.store import events, tasks
from cuttle.server.store import interruptions as store
from cuttle.server.store.interruptions import InterruptionRecord
from cuttle.server.store.transactions import Transactions

log = structlog.get_logger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]


def _message(record: InterruptionRecord) -> mpb.Interruption:
    return mpb.Interruption(
        id=record.id,
        task_id=record.task_id,
        kind=record.kind.value,
        step=record.step,
        action=record.action,
        machine=record.machine,
        title=record.title,
        instructions=record.instructions,
        responsible_teams=list(record.responsible_teams),
        responses=[r.value for r in record.responses],
        created_unix_ms=record.created_ms,
        response=record.response.value if record.response else "",
        answered_by=record.answered_by,
        answered_unix_ms=record.answered_ms or 0,
        note=record.note,
    )


def _deployment(session: Session, task_id: str) -> DeploymentTaskSpec:
    spec = tasks.get(session, task_id).spec
    if not isinstance(spec, DeploymentTaskSpec):
        raise InvalidArgument(f"task {task_id} is not a deployment")
    return spec


def _where(spec: DeploymentTaskSpec) -> dict[str, tuple[str, str]]:
    return {
        "project": (spec.project_id, spec.project_name),
        "environment": (spec.environment_id, spec.environment_name),
    }


class InterruptionService(model_pb2_grpc.InterruptionServiceServicer):
    """Implements InterruptionService over the store; the engine picks the answers up."""

    def __init__(self, tx: Transactions, signals: TaskSignals) -> None:
        self._tx = tx
        self._signals = signals

    async def ListInterruptions(  # noqa: N802
        self, request: mpb.ListInterruptionsRequest, context: Context
    ) -> mpb.ListInterruptionsResponse:
        """Interruptions the caller may see (the view role for their project and environment)."""
        caller = access.current()

        def work(session: Session) -> list[InterruptionRecord]:
            found = store.list_for(
                session, task_id=request.task_id or None, open_only=request.open_only
            )
            visible = []
            specs: dict[str, DeploymentTaskSpec] = {}
            for record in found:
                spec = specs.get(record.task_id) or _deployment(session, record.task_id)
                specs[record.task_id] = spec
                who = caller.in_space(spec.space_id)
                if who.can("view", project=spec.project_id, environment=spec.environment_id):
                    visible.append(record)
            return visible

        records = await self._tx.read(work)
        return mpb.ListInterruptionsResponse(interruptions=[_message(r) for r in records])

    async def RespondInterruption(  # noqa: N802
        self, request: mpb.RespondInterruptionRequest, context: Context
    ) -> mpb.Interruption:
        """Answer an interruption, if the caller may and the answer is one it offers."""
        try:
            response = Response(request.response)
        except ValueError:
            offered = ", ".join(r.value for r in Response)
            raise InvalidArgument(
                f"{request.response!r} is not an answer (answers: {offered})"
            ) from None
        caller = access.current()

        def work(session: Session) -> InterruptionRecord:
            current = store.get(session, request.id)
            spec = _deployment(session, current.task_id)
            who = caller.in_space(spec.space_id)
            _authorize(who, current, spec)
            answered = store.answer(session, current.id, response, by=who.name, note=request.note)
            events.record(
                session,
                space_id=spec.space_id,
                actor=who.name,
                category="answered",
                kind="interruption",
                document_id=None,
                document_name=f"{spec.project_name} {spec.release_version}",
                message=(
                    f"{who.name} answered {response.value} to {current.title!r} "
                    f"(task {current.task_id})"
                ),
                details={
                    "task_id": current.task_id,
                    "interruption": current.id,
                    "response": response.value,
                    "note": request.note,
                },
            )
            return answered

        answered = await self._tx.run(work)
        self._signals.notify(answered.task_id)
        log.info(
            "interruption_answered",
            task_id=answered.task_id,
            interruption=answered.id,
            response=response.value,
            by=answered.answered_by,
        )
        return _message(answered)


def _authorize(who: Principal, record: InterruptionRecord, spec: DeploymentTaskSpec) -> None:
    where = _where(spec)
    if record.kind == InterruptionKind.GUIDED_FAILURE:
        who.require("deploy", action="answer a guided failure", **where)
        return
    if who.is_system_admin:
        return
    teams = [g.team for g in who.grants]
    can_approve = who.can("approve", project=spec.project_id, environment=spec.environment_id)
    if may_answer_manual(teams, record.responsible_teams, can_approve):
        return
    if record.responsible_teams:
        raise PermissionDenied(
            f"{who.name!r} is in none of the responsible teams "
            f"({', '.join(record.responsible_teams)}) of {record.title!r}"
        )
    raise PermissionDenied(
        f"{who.name!r} needs the approve role for environment {spec.environment_name!r} "
        f"to answer {record.title!r}"
    )

"""The dashboard service: projects × environments with the latest deployment in each cell.

A caller sees the projects and environments they hold the view role for, and a cell only when
that role covers both its project and its environment.
"""

from __future__ import annotations

from typing import Any

import grpc
from sqlalchemy.orm import Session

from cuttle.protocol.v1 import model_pb2 as mpb
from cuttle.protocol.v1 import model_pb2_grpc
from cuttle.server.api import access
from cuttle.server.domain.dashboard import DashboardCell
from cuttle.server.store import dashboard
from cuttle.server.store import documents as doc_store
from cuttle.server.store.records import now_ms
from cuttle.server.store.transactions import Transactions

Context = grpc.aio.ServicerContext[Any, Any]


def _cell(
    cell: DashboardCell, project: str, environment: str, tenants: dict[str, tuple[str, str]]
) -> mpb.DashboardCell:
    tenant = tenants.get(cell.tenant_id, ("", cell.tenant_id))[1] if cell.tenant_id else ""
    return mpb.DashboardCell(
        project=project,
        environment=environment,
        tenant=tenant,
        release=cell.release_version,
        state=cell.state.value,
        has_warnings=cell.has_warnings,
        task_id=cell.task_id or "",
        deployed_unix_ms=cell.created_ms,
        finished_unix_ms=cell.finished_ms or 0,
        last_success_release=cell.last_success_version or "",
        last_success_unix_ms=cell.last_success_ms or 0,
    )


class DashboardService(model_pb2_grpc.DashboardServiceServicer):
    """Implements DashboardService over the store's dashboard cells."""

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    async def GetDashboard(  # noqa: N802
        self, request: mpb.GetDashboardRequest, context: Context
    ) -> mpb.Dashboard:
        """Every cell of the space the caller may view, with the rows and columns around them."""
        caller = access.current()

        def work(session: Session) -> mpb.Dashboard:
            space = doc_store.get_space(session, request.space or doc_store.DEFAULT_SPACE)
            who = caller.in_space(space.id)
            if not who.can_anywhere("view"):
                who.require("view", action="see the dashboard")
            projects = {
                p.id: p.name
                for p in doc_store.all_of_kind(session, space.id, "project")
                if who.can("view", project=p.id)
            }
            environments = {
                e.id: e.name
                for e in doc_store.all_of_kind(session, space.id, "environment")
                if who.can("view", environment=e.id)
            }
            found = [
                c
                for c in dashboard.cells(session, space.id)
                # Cells of a deleted environment stay in history but leave the dashboard.
                if c.project_id in projects
                and c.environment_id in environments
                and who.can("view", project=c.project_id, environment=c.environment_id)
            ]
            tenant_ids = {c.tenant_id for c in found if c.tenant_id}
            tenants = doc_store.names_by_id(session, tenant_ids) if tenant_ids else {}
            return mpb.Dashboard(
                projects=list(projects.values()),
                environments=list(environments.values()),
                cells=[
                    _cell(c, projects[c.project_id], environments[c.environment_id], tenants)
                    for c in found
                ],
                now_unix_ms=now_ms(),
            )

        return await self._tx.read(work)

"""The dashboard's index: per project, environment and tenant, its latest and last good deployment.

A table rather than an index on `deployments`: deployments name a release, not a project, and
"the latest row of each group" over a B-tree walks every past deployment on SQLite and on
PostgreSQL alike (neither skips through groups). One row per cell, written on each deployment
state change, keeps the dashboard's cost at the number of cells. Existing history fills it here.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    cells = op.create_table(
        "dashboard_cells",
        sa.Column("space_id", sa.String(32), nullable=False),
        sa.Column("project_id", sa.String(32), nullable=False),
        sa.Column("environment_id", sa.String(32), nullable=False),
        sa.Column("tenant_key", sa.String(32), nullable=False),
        sa.Column("latest_deployment_id", sa.String(32), nullable=False),
        sa.Column("last_success_deployment_id", sa.String(32), nullable=True),
        sa.ForeignKeyConstraint(
            ["space_id"],
            ["spaces.id"],
            name="fk_dashboard_cells_space_id_spaces",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["documents.id"],
            name="fk_dashboard_cells_project_id_documents",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "space_id", "project_id", "environment_id", "tenant_key", name="pk_dashboard_cells"
        ),
    )
    # One pass over the history in creation order: the last row of a cell is its latest, the
    # last success (by when it finished) its last good one. Histories before this are small.
    rows = op.get_bind().execute(
        sa.text(
            "SELECT r.space_id, r.project_id, d.environment_id, d.tenant_id, d.id, d.state,"
            " d.finished_ms FROM deployments d JOIN releases r ON r.id = d.release_id"
            " ORDER BY d.created_ms, d.id"
        )
    )
    found: dict[tuple[str, str, str, str], dict[str, object]] = {}
    success_at: dict[tuple[str, str, str, str], int] = {}
    for space_id, project_id, environment_id, tenant_id, dep_id, state, finished in rows:
        key = (space_id, project_id, environment_id, tenant_id or "")
        cell = found.setdefault(
            key,
            {
                "space_id": space_id,
                "project_id": project_id,
                "environment_id": environment_id,
                "tenant_key": tenant_id or "",
                "last_success_deployment_id": None,
            },
        )
        cell["latest_deployment_id"] = dep_id
        if state == "success" and (finished or 0) >= success_at.get(key, -1):
            success_at[key] = finished or 0
            cell["last_success_deployment_id"] = dep_id
    if found:
        op.bulk_insert(cells, list(found.values()))


def downgrade() -> None:
    """Revert this revision; the cells are derived from `deployments` and rebuilt on upgrade."""
    op.drop_table("dashboard_cells")

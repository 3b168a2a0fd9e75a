"""The dashboard's index: per project, environment and tenant, its latest and last good deployment.

A table rather than an index on `deployments`: deployments name a release, not a project, and
"the latest row of each group" over a B-tree walks every past deployment on SQLite and on
PostgreSQL alike (neither skips through groups); and even pointers from a cell to its
deployments get joined by PostgreSQL with a sequential scan of the whole history once it is
large. So each cell (primary key: space, project, environment, tenant) holds a copy of what the
dashboard shows, written with each deployment state change; reading it costs the number of
cells. Existing history fills it here.

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
        sa.Column("release_version", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("task_id", sa.String(32), nullable=True),
        sa.Column("deployed_ms", sa.BigInteger(), nullable=False),
        sa.Column("finished_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_success_deployment_id", sa.String(32), nullable=True),
        sa.Column("last_success_version", sa.String(200), nullable=True),
        sa.Column("last_success_ms", sa.BigInteger(), nullable=True),
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
    # One pass over the history in creation order, as the store sees deployments arrive: the
    # last row of a cell is its latest, the last success its last good one. Histories from
    # before this revision are small (the engine that makes them is new).
    rows = op.get_bind().execute(
        sa.text(
            "SELECT r.space_id, r.project_id, d.environment_id, d.tenant_id, d.id, d.state,"
            " d.task_id, d.created_ms, d.finished_ms, r.version"
            " FROM deployments d JOIN releases r ON r.id = d.release_id"
            " ORDER BY d.created_ms, d.id"
        )
    )
    found: dict[tuple[str, str, str, str], dict[str, object]] = {}
    for (
        space_id,
        project_id,
        environment_id,
        tenant_id,
        dep_id,
        state,
        task_id,
        created,
        done,
        version,
    ) in rows:
        key = (space_id, project_id, environment_id, tenant_id or "")
        cell = found.setdefault(
            key,
            {
                "space_id": space_id,
                "project_id": project_id,
                "environment_id": environment_id,
                "tenant_key": tenant_id or "",
                "last_success_deployment_id": None,
                "last_success_version": None,
                "last_success_ms": None,
            },
        )
        cell.update(
            latest_deployment_id=dep_id,
            release_version=version,
            state=state,
            task_id=task_id,
            deployed_ms=created,
            finished_ms=done,
        )
        if state == "success":
            cell.update(
                last_success_deployment_id=dep_id,
                last_success_version=version,
                last_success_ms=done,
            )
    if found:
        op.bulk_insert(cells, list(found.values()))


def downgrade() -> None:
    """Revert this revision; the cells are derived from `deployments` and rebuilt on upgrade."""
    op.drop_table("dashboard_cells")

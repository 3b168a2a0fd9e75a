"""The built-in package feed: package versions, and the versions each release recorded.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "packages",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("space_id", sa.String(length=32), nullable=False),
        sa.Column("package_id", sa.String(length=200), nullable=False),
        sa.Column("package_key", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=200), nullable=False),
        sa.Column("version_key", sa.String(length=200), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("pushed_by", sa.String(length=200), nullable=False),
        sa.Column("pushed_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["space_id"],
            ["spaces.id"],
            name=op.f("fk_packages_space_id_spaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_packages")),
    )
    op.create_index(
        "ix_packages_space_id_package_key_version_key",
        "packages",
        ["space_id", "package_key", "version_key"],
        unique=True,
    )
    op.create_index("ix_packages_sha256", "packages", ["sha256"])
    op.create_table(
        "release_packages",
        sa.Column("release_id", sa.String(length=32), nullable=False),
        sa.Column("package_key", sa.String(length=200), nullable=False),
        sa.Column("version_key", sa.String(length=200), nullable=False),
        sa.Column("space_id", sa.String(length=32), nullable=False),
        sa.Column("package_id", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=200), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["release_id"],
            ["releases.id"],
            name=op.f("fk_release_packages_release_id_releases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "release_id", "package_key", "version_key", name=op.f("pk_release_packages")
        ),
    )
    op.create_index(
        "ix_release_packages_space_id_package_key_version_key",
        "release_packages",
        ["space_id", "package_key", "version_key"],
    )


def downgrade() -> None:
    """Revert this revision; the feed's metadata is dropped (its files stay on disk)."""
    op.drop_table("release_packages")
    op.drop_table("packages")

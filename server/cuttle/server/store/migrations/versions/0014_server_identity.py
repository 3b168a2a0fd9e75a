"""The server's identity (certificate and encrypted key) lives in the database, shared by nodes.

Every node of one database presents the same certificate, so Tentacles trust one thumbprint
whichever node they talk to. The row is filled by `cuttle-server init`, or on the first start of
an upgraded home from its `server-key.pem`/`server-certificate.pem`.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "server_identity",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("thumbprint", sa.String(length=64), nullable=False),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.Column("key_ciphertext", sa.Text(), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_server_identity_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_server_identity")),
    )


def downgrade() -> None:
    """Revert this revision; each node keeps its identity files in its home."""
    op.drop_table("server_identity")

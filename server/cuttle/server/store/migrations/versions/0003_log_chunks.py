"""Task log lines packed into chunks: one row per batch of lines instead of one per line.

Existing lines are carried over, each as a chunk of one line (positions and sequences kept).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The chunk format of cuttle.server.store.log_packing, frozen here: a migration must keep
# meaning what it meant when it was written.
_HEADER = struct.Struct(">qqBBI")
_COPY_BATCH = 5000


def upgrade() -> None:
    """Apply this revision."""
    chunks = op.create_table(
        "task_log_chunks",
        sa.Column("task_id", sa.String(length=32), nullable=False),
        sa.Column("first_position", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("last_position", sa.BigInteger(), nullable=False),
        sa.Column("machine_name", sa.String(length=200), nullable=False),
        sa.Column("first_sequence", sa.BigInteger(), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.Column("lines", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id", "machine_name"],
            ["task_targets.task_id", "task_targets.machine_name"],
            name=op.f("fk_task_log_chunks_task_id_machine_name_task_targets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "first_position", name=op.f("pk_task_log_chunks")),
        sa.UniqueConstraint(
            "task_id",
            "machine_name",
            "first_sequence",
            name=op.f("uq_task_log_chunks_task_id_machine_name_first_sequence"),
        ),
    )
    op.create_index(
        "ix_task_log_chunks_task_id_last_position",
        "task_log_chunks",
        ["task_id", "last_position"],
    )
    old = sa.table(
        "task_log",
        sa.column("task_id", sa.String),
        sa.column("position", sa.BigInteger),
        sa.column("machine_name", sa.String),
        sa.column("sequence", sa.BigInteger),
        sa.column("time_ms", sa.BigInteger),
        sa.column("source", sa.SmallInteger),
        sa.column("level", sa.SmallInteger),
        sa.column("text", sa.LargeBinary),
    )
    bind = op.get_bind()
    rows = bind.execute(sa.select(old).order_by(old.c.task_id, old.c.position))
    while batch := rows.fetchmany(_COPY_BATCH):
        bind.execute(
            chunks.insert(),
            [
                {
                    "task_id": r.task_id,
                    "first_position": r.position,
                    "last_position": r.position,
                    "machine_name": r.machine_name,
                    "first_sequence": r.sequence,
                    "last_sequence": r.sequence,
                    "lines": _HEADER.pack(r.sequence, r.time_ms, r.source, r.level, len(r.text))
                    + bytes(r.text),
                }
                for r in batch
            ],
        )
    op.drop_table("task_log")


def downgrade() -> None:
    """Revert this revision: every chunk becomes rows again."""
    lines = op.create_table(
        "task_log",
        sa.Column("task_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("machine_name", sa.String(length=200), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("time_ms", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.SmallInteger(), nullable=False),
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("text", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id", "machine_name"],
            ["task_targets.task_id", "task_targets.machine_name"],
            name=op.f("fk_task_log_task_id_machine_name_task_targets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", "position", name=op.f("pk_task_log")),
        sa.UniqueConstraint(
            "task_id",
            "machine_name",
            "sequence",
            name=op.f("uq_task_log_task_id_machine_name_sequence"),
        ),
    )
    chunks = sa.table(
        "task_log_chunks",
        sa.column("task_id", sa.String),
        sa.column("first_position", sa.BigInteger),
        sa.column("machine_name", sa.String),
        sa.column("lines", sa.LargeBinary),
    )
    bind = op.get_bind()
    result = bind.execute(sa.select(chunks).order_by(chunks.c.task_id, chunks.c.first_position))
    while batch := result.fetchmany(500):
        rows = []
        for chunk in batch:
            data, offset, position = bytes(chunk.lines), 0, chunk.first_position
            while offset < len(data):
                sequence, time_ms, source, level, length = _HEADER.unpack_from(data, offset)
                offset += _HEADER.size
                rows.append(
                    {
                        "task_id": chunk.task_id,
                        "position": position,
                        "machine_name": chunk.machine_name,
                        "sequence": sequence,
                        "time_ms": time_ms,
                        "source": source,
                        "level": level,
                        "text": data[offset : offset + length],
                    }
                )
                offset += length
                position += 1
        if rows:
            bind.execute(lines.insert(), rows)
    op.drop_table("task_log_chunks")

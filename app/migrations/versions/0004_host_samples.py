"""host_samples: what each finished job measured about its host (issue 9, app.pool.hosts)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 02:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "host_samples",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("machine_id", sa.String(length=64), nullable=False),
        sa.Column("gpu_name", sa.String(length=64), nullable=True),
        sa.Column("instance_id", sa.String(length=64), nullable=True),
        sa.Column("job_id", sa.String(length=40), nullable=True),
        sa.Column("workflow", sa.String(length=128), nullable=True),
        sa.Column("steps", sa.Integer(), nullable=True),
        sa.Column("frames", sa.Integer(), nullable=True),
        sa.Column("megapixels", sa.Float(), nullable=True),
        sa.Column("gpu_s", sa.Float(), nullable=False),
        sa.Column("s_per_step", sa.Float(), nullable=True),
        sa.Column("s_per_frame", sa.Float(), nullable=True),
        sa.Column("download_mbps", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("host_samples", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_host_samples_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_host_samples_gpu_name"), ["gpu_name"], unique=False)
        batch_op.create_index(batch_op.f("ix_host_samples_machine_id"), ["machine_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_host_samples_provider"), ["provider"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("host_samples", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_host_samples_provider"))
        batch_op.drop_index(batch_op.f("ix_host_samples_machine_id"))
        batch_op.drop_index(batch_op.f("ix_host_samples_gpu_name"))
        batch_op.drop_index(batch_op.f("ix_host_samples_created_at"))
    op.drop_table("host_samples")

"""replicas: job claims (jobs.claimed_by, jobs.claim_until), fleet_leases, inflight_keys, rate_counters

Several `comfyfleet serve` replicas share one database: each active job is claimed by one replica for a
lease it renews (app.jobs.claims); renting and the cleanup are decided under named leases
(app.pool.locks); the leader of an in-flight cache key holds its row in inflight_keys.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 02:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("claim_until", sa.Float(), nullable=True))
        batch.create_index("ix_jobs_claimed_by", ["claimed_by"], unique=False)
    op.create_table(
        "fleet_leases",
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=True),
        sa.Column("until", sa.Float(), nullable=False),
        sa.Column("acquired_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "rate_counters",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("window_no", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", "window_no"),
    )
    op.create_table(
        "inflight_keys",
        sa.Column("cache_key", sa.String(length=80), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=True),
        sa.Column("until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("cache_key"),
    )


def downgrade() -> None:
    op.drop_table("inflight_keys")
    op.drop_table("rate_counters")
    op.drop_table("fleet_leases")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_claimed_by")
        batch.drop_column("claim_until")
        batch.drop_column("claimed_by")

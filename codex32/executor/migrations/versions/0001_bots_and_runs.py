"""Bots and their runs.

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bots",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("desired", sa.String(16), nullable=False, server_default="stopped"),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "bot_runs",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "bot_id", sa.String(32), sa.ForeignKey("bots.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("deployment_type", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("health", sa.String(16), nullable=False, server_default="none"),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("pid_start_time", sa.Float(), nullable=True),
        sa.Column("container_id", sa.String(64), nullable=True),
        sa.Column("pod_name", sa.String(253), nullable=True),
        # What started the run: user, policy (a restart after an exit), unhealthy, recover.
        sa.Column("trigger", sa.String(16), nullable=False, server_default="user"),
        sa.UniqueConstraint("bot_id", "number", name="uq_bot_runs_bot_number"),
    )
    op.create_index("ix_bot_runs_bot_id", "bot_runs", ["bot_id"])
    op.create_index("ix_bot_runs_state", "bot_runs", ["state"])


def downgrade() -> None:
    op.drop_index("ix_bot_runs_state", table_name="bot_runs")
    op.drop_index("ix_bot_runs_bot_id", table_name="bot_runs")
    op.drop_table("bot_runs")
    op.drop_table("bots")

"""Initial lifecycle store: resources, revisions, registered values, audit, teardown marks.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, **kw) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), **kw)


def upgrade() -> None:
    op.create_table(
        "ik_resources",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("pipeline", sa.String(200), nullable=False, index=True),
        sa.Column("task", sa.String(300), nullable=False),
        sa.Column("environment", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("module", sa.Text()),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("sensitive_variables", sa.JSON(), nullable=False),
        sa.Column("sensitive_outputs", sa.JSON(), nullable=False),
        sa.Column("parents", sa.JSON(), nullable=False),
        sa.Column("fingerprint", sa.String(64)),
        sa.Column("last_run_id", sa.String(64)),
        sa.Column("error", sa.Text()),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        sa.UniqueConstraint("pipeline", "task", "environment"),
    )
    op.create_table(
        "ik_revisions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("resource_id", sa.String(36), nullable=False, index=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        _ts("time", nullable=False),
        sa.Column("snapshot", sa.JSON(), nullable=False),
    )
    op.create_table(
        "ik_registered",
        sa.Column("pipeline", sa.String(200), primary_key=True),
        sa.Column("environment", sa.String(100), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("value", sa.JSON()),
        sa.Column("task", sa.String(300), nullable=False),
        sa.Column("sensitive", sa.Boolean(), nullable=False),
        sa.Column("run_id", sa.String(64)),
        _ts("updated_at", nullable=False),
    )
    op.create_table(
        "ik_audit",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        _ts("time", nullable=False, index=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("pipeline", sa.String(200), index=True),
        sa.Column("task", sa.String(300)),
        sa.Column("environment", sa.String(100)),
        sa.Column("resource_id", sa.String(36)),
        sa.Column("revision", sa.Integer()),
        sa.Column("run_id", sa.String(64)),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("archived", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "ik_teardown_runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("handled_by", sa.String(50), nullable=False),
        _ts("time", nullable=False),
    )


def downgrade() -> None:
    for table in ("ik_teardown_runs", "ik_audit", "ik_registered", "ik_revisions",
                  "ik_resources"):
        op.drop_table(table)

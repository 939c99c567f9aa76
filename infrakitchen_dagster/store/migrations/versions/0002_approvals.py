"""Approval requests (with the update temporary state), grants, drift on records, and
which teardown run acted on a failed run's claim.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _ts(name: str, **kw) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), **kw)


def upgrade() -> None:
    with op.batch_alter_table("ik_resources") as batch:
        batch.add_column(sa.Column("module_hash", sa.String(64)))
        batch.add_column(sa.Column("drift", sa.JSON()))
    with op.batch_alter_table("ik_teardown_runs") as batch:
        batch.add_column(sa.Column("teardown_run_id", sa.String(64)))
    op.create_table(
        "ik_approval_requests",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("resource_id", sa.String(36), nullable=False, index=True),
        sa.Column("pipeline", sa.String(200), nullable=False, index=True),
        sa.Column("task", sa.String(300), nullable=False),
        sa.Column("environment", sa.String(100), nullable=False),
        sa.Column("operation", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, index=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("plan_summary", sa.JSON(), nullable=False),
        sa.Column("plan_sha256", sa.String(64), nullable=False),
        sa.Column("plan_path", sa.Text(), nullable=False),
        sa.Column("proposed_variables", sa.JSON(), nullable=False),
        sa.Column("runtime_vars", sa.JSON(), nullable=False),
        sa.Column("sensitive_variables", sa.JSON(), nullable=False),
        sa.Column("diff", sa.JSON(), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        _ts("requested_at", nullable=False),
        sa.Column("request_run_id", sa.String(64)),
        sa.Column("decided_by", sa.String(200)),
        _ts("decided_at"),
        sa.Column("decision_seq", sa.Integer(), index=True, unique=True),
        sa.Column("reason", sa.Text()),
        sa.Column("launched_run_id", sa.String(64)),
        sa.Column("applied_run_id", sa.String(64)),
        _ts("updated_at", nullable=False),
    )
    op.create_table(
        "ik_grants",
        sa.Column("pipeline", sa.String(200), primary_key=True),
        sa.Column("principal", sa.String(200), primary_key=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("granted_by", sa.String(200), nullable=False),
        _ts("granted_at", nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ik_grants")
    op.drop_table("ik_approval_requests")
    with op.batch_alter_table("ik_teardown_runs") as batch:
        batch.drop_column("teardown_run_id")
    with op.batch_alter_table("ik_resources") as batch:
        batch.drop_column("drift")
        batch.drop_column("module_hash")

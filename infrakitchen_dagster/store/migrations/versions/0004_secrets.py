"""Secrets at rest: saved plans kept (encrypted) in the store, and runtime vars passed to
runs by reference. Existing secrets are sealed right after this upgrade (store/__init__).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ik_approval_requests") as batch:
        batch.add_column(sa.Column("plan_blob", sa.LargeBinary()))
    op.create_table(
        "ik_run_vars",
        sa.Column("ref", sa.String(64), primary_key=True),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ik_run_vars")
    with op.batch_alter_table("ik_approval_requests") as batch:
        batch.drop_column("plan_blob")

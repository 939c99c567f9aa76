"""Run principals: who each Dagster run acts as, settled by its first step. A run started
from a terminal is attached to its code location afterwards (so the UI's history shows
it); from then on its origin looks like a UI launch's, so later steps read the principal
settled here instead of judging the run again.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ik_run_principals",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ik_run_principals")

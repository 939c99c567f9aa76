"""Leases on records: which process holds an `in_progress` record and until when, so a
run that died (killed, machine gone) is recognised without a person; and the state
identity (serial, lineage) each apply left, so a state moved since is seen as a change.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ik_resources") as batch:
        batch.add_column(sa.Column("lease_holder", sa.JSON()))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("state_serial", sa.Integer()))
        batch.add_column(sa.Column("state_lineage", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("ik_resources") as batch:
        batch.drop_column("state_lineage")
        batch.drop_column("state_serial")
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_holder")

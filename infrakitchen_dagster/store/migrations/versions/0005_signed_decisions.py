"""Signed decisions: how the decider of an approval request is known (claimed or signed),
the SSH signature over the decision, and the principal and key it proved, so the decision
is verified again before the apply.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ik_approval_requests") as batch:
        batch.add_column(sa.Column("identity", sa.String(20)))
        batch.add_column(sa.Column("signature", sa.Text()))
        batch.add_column(sa.Column("signer_principal", sa.String(200)))
        batch.add_column(sa.Column("key_fingerprint", sa.String(100)))


def downgrade() -> None:
    with op.batch_alter_table("ik_approval_requests") as batch:
        batch.drop_column("key_fingerprint")
        batch.drop_column("signer_principal")
        batch.drop_column("signature")
        batch.drop_column("identity")

"""Record context: where the module came from (`source`: module string, ref, commit), the
record's labels and tags (own and inherited, with the ancestor each came from) and the last
policy evaluation (`policy`: deny/warn messages and the policy digest).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COLUMNS = ("source", "labels", "tags", "policy")


def upgrade() -> None:
    with op.batch_alter_table("ik_resources") as batch:
        for name in _COLUMNS:
            batch.add_column(sa.Column(name, sa.JSON()))


def downgrade() -> None:
    with op.batch_alter_table("ik_resources") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)

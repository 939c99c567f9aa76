"""Alembic environment: always run programmatically by `store.migrate` on a connection."""

from alembic import context

from infrakitchen_dagster.store.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata,
                  version_table="ik_alembic_version")
with context.begin_transaction():
    context.run_migrations()

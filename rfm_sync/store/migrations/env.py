"""Alembic environment: always run with a connection handed in by rfm_sync.store.migrate()."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

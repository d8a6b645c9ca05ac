"""Alembic's environment: runs the revision scripts on the connection the caller provides.

Only online migrations on a given connection are supported; the store opens
the connection (and its transaction, and any lock) itself.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from sada.consumers.tables import metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("migrations run from sada.consumers.migrations.upgrade(connection)")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place: later revisions need batch mode there.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")
run_migrations_online()

"""Sinks of the canonical log: the SQL read model, the tamper-evident archive, checkpoints.

:mod:`~sada.consumers.tables` declares the schema, :mod:`~sada.consumers.migrations`
creates it (Alembic), :mod:`~sada.consumers.store` writes a projector batch in one
transaction and answers the read queries, :mod:`~sada.consumers.archive` defines
the archive's hash chain and checks it. SQLite is the embedded default,
PostgreSQL the production database; both give byte-identical contents.
"""

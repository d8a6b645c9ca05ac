"""The work queue's texts and search: titles and bodies as sent, and their search key.

Revision ID: 0004
Revises: 0002 (0003 if that lands first)
Create Date: 2026-12-02

``submission_texts`` holds each submission's title and body exactly as sent,
with ``search_key`` (the normalised comparison key); ``text_sync`` is how far
the archive has been read for them. The search index is per dialect and not
in the table metadata: SQLite gets an FTS5 table with the trigram tokenizer,
kept up by a trigger; PostgreSQL a ``pg_trgm`` GIN index on the key, if the
extension exists or may be created (without it the same LIKE search still
works, by scanning).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "submission_texts",
        sa.Column("submission_id", sa.Text, primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("language", sa.Text),
        sa.Column("search_key", sa.Text, nullable=False),
    )
    op.create_table(
        "text_sync",
        sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
    )
    # The work queue's default order: nearest running deadline, then id. The
    # expression is the one sada.consumers.store.queue.URGENCY_SQL spells (copied
    # here, so this revision keeps creating the same index).
    op.execute(
        "CREATE INDEX ix_work_queue_urgency ON submissions ((CASE WHEN first_response_due "
        "IS NOT NULL AND (resolution_due IS NULL OR first_response_due <= resolution_due) "
        "THEN first_response_due WHEN resolution_due IS NOT NULL THEN resolution_due "
        "ELSE '~' END), submission_id)"
    )
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE submission_search USING fts5("
            "search_key, submission_id UNINDEXED, tokenize='trigram')"
        )
        op.execute(
            "CREATE TRIGGER submission_search_fill AFTER INSERT ON submission_texts BEGIN "
            "INSERT INTO submission_search (search_key, submission_id) "
            "VALUES (new.search_key, new.submission_id); END"
        )
    elif bind.dialect.name == "postgresql":
        schema = _trigram_schema(bind)
        if schema is not None:
            op.execute(
                "CREATE INDEX submission_search_trgm ON submission_texts "
                f'USING gin (search_key "{schema}".gin_trgm_ops)'
            )


def _trigram_schema(bind: sa.Connection) -> str | None:
    """The schema of the pg_trgm extension, created if this role may; None without it."""
    find = sa.text(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pg_trgm'"
    )
    schema = bind.scalar(find)
    if schema is None:
        try:
            with bind.begin_nested():
                bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public"))
        except sa.exc.DBAPIError:
            return None
        schema = bind.scalar(find)
    return None if schema is None else str(schema)


def downgrade() -> None:
    op.execute("DROP INDEX ix_work_queue_urgency")
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS submission_search_fill")
        op.execute("DROP TABLE IF EXISTS submission_search")
    op.drop_table("text_sync")
    op.drop_table("submission_texts")

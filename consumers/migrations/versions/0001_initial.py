"""The initial schema: read model, ledger, archive and checkpoints.

Revision ID: 0001
Revises:
Create Date: 2026-01-01

Written out in full rather than derived from ``tables.metadata``, so that this
revision keeps creating the same schema however the tables evolve later.
Instants are fixed-width ISO-8601 UTC text (27 characters).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INSTANT = sa.String(27)
_HASH = sa.String(64)


def upgrade() -> None:
    op.create_table(
        "submissions",
        sa.Column("submission_id", sa.Text, primary_key=True),
        sa.Column("tracking_code", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("created_at", _INSTANT, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("unit_id", sa.Text, nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("support", sa.Integer, nullable=False),
        sa.Column("oppose", sa.Integer, nullable=False),
        sa.Column("arrived_at", _INSTANT, nullable=False),
        sa.Column("first_response_due", _INSTANT),
        sa.Column("resolution_due", _INSTANT),
        sa.Column("first_response_overdue", sa.Boolean, nullable=False),
        sa.Column("resolution_overdue", sa.Boolean, nullable=False),
        sa.Column("first_response_at", _INSTANT),
        sa.Column("closed_at", _INSTANT),
        sa.Column("satisfaction", sa.Integer),
        sa.Column("escalations", sa.Integer, nullable=False),
        sa.Column("updated_at", _INSTANT, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
    )
    op.create_index("ix_submissions_tracking_code", "submissions", ["tracking_code"], unique=True)
    op.create_index("ix_submissions_status_unit", "submissions", ["status", "unit_id"])
    op.create_index("ix_submissions_partition", "submissions", ["partition"])

    op.create_table(
        "votes",
        sa.Column("submission_id", sa.Text, nullable=False),
        sa.Column("voter_id", sa.Text, nullable=False),
        sa.Column("stance", sa.Text, nullable=False),
        sa.Column("at", _INSTANT, nullable=False),
        sa.PrimaryKeyConstraint("submission_id", "voter_id", name="pk_votes"),
    )

    op.create_table(
        "responses",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("response_id", sa.Text, nullable=False),
        sa.Column("submission_id", sa.Text, nullable=False),
        sa.Column("unit_id", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("referred_to_unit_id", sa.Text),
        sa.Column("at", _INSTANT, nullable=False),
        sa.Column("effective", sa.Boolean, nullable=False),
    )
    op.create_index("ix_responses_submission", "responses", ["submission_id", "at"])

    op.create_table(
        "escalations",
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("submission_id", sa.Text, nullable=False),
        sa.Column("time", _INSTANT, nullable=False),
        sa.Column("from_level", sa.Integer, nullable=False),
        sa.Column("to_level", sa.Integer, nullable=False),
        sa.Column("from_unit_id", sa.Text, nullable=False),
        sa.Column("to_unit_id", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("support", sa.Integer, nullable=False),
        sa.Column("deadline", _INSTANT),
        sa.Column("published", sa.Boolean, nullable=False),
    )
    op.create_index("ix_escalations_submission", "escalations", ["submission_id", "to_level"])
    op.create_index(
        "ix_escalations_outbox",
        "escalations",
        ["published", "time", "submission_id", "to_level"],
    )

    op.create_table(
        "events",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("submission_id", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("time", _INSTANT, nullable=False),
        sa.Column("at", _INSTANT, nullable=False),
        sa.Column("late", sa.Boolean, nullable=False),
        sa.Column("effective", sa.Boolean, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
    )
    op.create_index("ix_events_submission_offset", "events", ["submission_id", "offset"])

    op.create_table(
        "archive",
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("record", sa.LargeBinary, nullable=False),
        sa.Column("prev_hash", _HASH, nullable=False),
        sa.Column("hash", _HASH, nullable=False),
        sa.PrimaryKeyConstraint("partition", "offset", name="pk_archive"),
    )

    op.create_table(
        "checkpoints",
        sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        sa.Column("clock", _INSTANT),
        sa.Column("head_hash", _HASH, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "checkpoints",
        "archive",
        "events",
        "escalations",
        "responses",
        "votes",
        "submissions",
    ):
        op.drop_table(table)

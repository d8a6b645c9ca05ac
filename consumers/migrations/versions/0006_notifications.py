"""Notifications: who follows a submission, who was told what, and webhook deliveries.

The projector writes ``followers`` and ``notifications`` with each batch (the
latter is also the outbox of ``sada.notifications``); publishing a notification
fans it out to one ``deliveries`` row per subscribed webhook endpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INSTANT = sa.String(27)  # instants are fixed-width RFC 3339 text, as in 0001


def upgrade() -> None:
    op.create_table(
        "followers",
        sa.Column("submission_id", sa.Text, nullable=False),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("source", sa.Text),
        sa.PrimaryKeyConstraint("submission_id", "recipient"),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("submission_id", sa.Text, nullable=False),
        sa.Column("decision_id", sa.Text, nullable=False),
        sa.Column("at", _INSTANT, nullable=False),
        sa.Column("source", sa.Text),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("published", sa.Boolean, nullable=False),
    )
    op.create_index(
        "ix_notifications_outbox", "notifications", ["published", "partition", "offset", "seq"]
    )
    op.create_table(
        "deliveries",
        sa.Column("notification_id", sa.Text, nullable=False),
        sa.Column("endpoint", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", _INSTANT, nullable=False),
        sa.Column("next_attempt_at", _INSTANT, nullable=False),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("delivered_at", _INSTANT),
        sa.PrimaryKeyConstraint("notification_id", "endpoint"),
    )
    op.create_index("ix_deliveries_due", "deliveries", ["state", "endpoint", "next_attempt_at"])
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("disabled_at", _INSTANT),
        sa.Column("reason", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("webhook_endpoints")
    op.drop_index("ix_deliveries_due", "deliveries")
    op.drop_table("deliveries")
    op.drop_index("ix_notifications_outbox", "notifications")
    op.drop_table("notifications")
    op.drop_table("followers")

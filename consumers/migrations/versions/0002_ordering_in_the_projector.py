"""Ordering moves into the projector: what each partition holds, and the rejections ledger.

Ingress members forward events unordered; the projector of each log partition
orders them and keeps what it holds (watermarks, offsets of waiting events) in
its checkpoint row, and writes every rejected input to ``rejections``, which is
both the ledger that absorbs redeliveries and the outbox of ``sada.dlq``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INSTANT = sa.String(27)  # instants are fixed-width RFC 3339 text, as in 0001


def upgrade() -> None:
    with op.batch_alter_table("checkpoints") as batch:
        batch.add_column(sa.Column("pending", sa.Text, nullable=False, server_default=""))
    op.create_table(
        "rejections",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("src_topic", sa.Text, nullable=False),
        sa.Column("src_partition", sa.Integer, nullable=False),
        sa.Column("src_offset", sa.BigInteger, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("value", sa.LargeBinary),
        sa.Column("at", _INSTANT),
        sa.Column("published", sa.Boolean, nullable=False),
    )
    op.create_index("ix_rejections_outbox", "rejections", ["published", "partition", "offset"])


def downgrade() -> None:
    op.drop_index("ix_rejections_outbox", "rejections")
    op.drop_table("rejections")
    with op.batch_alter_table("checkpoints") as batch:
        batch.drop_column("pending")

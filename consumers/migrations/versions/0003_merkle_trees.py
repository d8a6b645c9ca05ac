"""Merkle trees over the archive, signed checkpoints and the deployment's verifier keys.

Revision ID: 0003
Revises: 0002
Create Date: 2026-02-01

Adds each archived record's leaf index, each partition's tree head to its
checkpoint row, the trees' complete nodes, the signed checkpoints and the
verifier keys. An archive written before this revision gets its trees built
here, partition by partition in offset order, exactly as the projector builds
them (RFC 9162 hashing never changes, so the domain's code is safe to call).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from sada.pipeline.domain.merkle import EMPTY_ROOT, Frontier, leaf_hash, stored_index

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INSTANT = sa.String(27)
_HASH = sa.String(64)
_CHUNK = 5000


def upgrade() -> None:
    op.add_column("archive", sa.Column("leaf", sa.BigInteger, nullable=False, server_default="0"))
    op.add_column(
        "checkpoints",
        sa.Column("tree_size", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.add_column(
        "checkpoints",
        sa.Column("tree_root", _HASH, nullable=False, server_default=EMPTY_ROOT.hex()),
    )
    op.create_table(
        "merkle_nodes",
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("partition", "seq", name="pk_merkle_nodes"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "signed_checkpoints",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("tree_size", sa.BigInteger, nullable=False),
        sa.Column("root", _HASH, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("signed_at", _INSTANT, nullable=False),
        sa.Column("published", sa.Boolean, nullable=False),
    )
    op.create_index(
        "ix_signed_checkpoints_head",
        "signed_checkpoints",
        ["partition", "key", "tree_size"],
        unique=True,
    )
    op.create_index("ix_signed_checkpoints_outbox", "signed_checkpoints", ["published", "seq"])
    op.create_table(
        "signing_keys",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("verifier_key", sa.Text, nullable=False),
        sa.Column("deployment", sa.Text, nullable=False),
        sa.Column("added_at", _INSTANT, nullable=False),
        sa.Column("retired_at", _INSTANT),
    )
    _build_trees(op.get_bind())


def _build_trees(conn: sa.Connection) -> None:
    """Trees for the records archived before this revision (none in a new database)."""
    archive = sa.table(
        "archive",
        sa.column("partition", sa.Integer),
        sa.column("offset", sa.BigInteger),
        sa.column("record", sa.LargeBinary),
        sa.column("leaf", sa.BigInteger),
    )
    nodes = sa.table(
        "merkle_nodes",
        sa.column("partition", sa.Integer),
        sa.column("seq", sa.BigInteger),
        sa.column("hash", sa.LargeBinary),
    )
    checkpoints = sa.table(
        "checkpoints",
        sa.column("partition", sa.Integer),
        sa.column("tree_size", sa.BigInteger),
        sa.column("tree_root", _HASH),
    )
    set_leaf = (
        sa.update(archive)
        .where(
            archive.c.partition == sa.bindparam("p"),
            archive.c.offset == sa.bindparam("o"),
        )
        .values(leaf=sa.bindparam("leaf"))
    )
    partitions = conn.execute(sa.select(archive.c.partition).distinct()).scalars().all()
    for p in sorted(partitions):
        frontier = Frontier()
        last = -1
        while True:
            # In chunks by offset: no cursor stays open across the writes.
            rows = conn.execute(
                sa.select(archive.c.offset, archive.c.record)
                .where(archive.c.partition == p, archive.c.offset > last)
                .order_by(archive.c.offset)
                .limit(_CHUNK)
            ).all()
            if not rows:
                break
            leaves = []
            made = []
            for offset, record in rows:
                leaves.append({"p": p, "o": offset, "leaf": frontier.size})
                made.extend(frontier.append(leaf_hash(bytes(record))))
            conn.execute(set_leaf, leaves)
            conn.execute(
                sa.insert(nodes),
                [{"partition": p, "seq": stored_index(lv, i), "hash": h} for lv, i, h in made],
            )
            last = rows[-1][0]
        conn.execute(
            sa.update(checkpoints)
            .where(checkpoints.c.partition == p)
            .values(tree_size=frontier.size, tree_root=frontier.root().hex())
        )


def downgrade() -> None:
    op.drop_table("signing_keys")
    op.drop_index("ix_signed_checkpoints_outbox", "signed_checkpoints")
    op.drop_index("ix_signed_checkpoints_head", "signed_checkpoints")
    op.drop_table("signed_checkpoints")
    op.drop_table("merkle_nodes")
    with op.batch_alter_table("checkpoints") as batch:
        batch.drop_column("tree_root")
        batch.drop_column("tree_size")
    with op.batch_alter_table("archive") as batch:
        batch.drop_column("leaf")

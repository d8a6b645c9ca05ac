"""The archive's Merkle trees in the store: grown with each batch, read for proofs and audits.

Each partition's tree is kept as its complete nodes (table ``merkle_nodes``)
and its head (size and root) in the partition's checkpoint row. A batch write
appends its records' leaves to the tree from the frontier (the O(log n) nodes
that make up the current tree), in the batch's transaction: the new leaves,
the nodes they complete and the new head commit with the archive records or
not at all. The frontier of each partition is kept between batches and used
only while the stored head is the one it was built for; anything else (a
failed commit, another writer) reloads it from the stored nodes.

Proofs read the O(log n) nodes they need in one query. The audit
(:mod:`sada.consumers.tree_audit`) recomputes the trees from the records and
trusts no stored node.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Select, select

from sada.consumers.store.base import StoreBase
from sada.consumers.tables import checkpoints, merkle_nodes
from sada.pipeline.domain.errors import ProofError
from sada.pipeline.domain.merkle import (
    EMPTY_ROOT,
    Frontier,
    NodeId,
    consistency_plan,
    frontier_nodes,
    inclusion_plan,
    prove,
    stored_index,
)
from sada.pipeline.domain.notary import TreeState


@dataclass(slots=True)
class Growth:
    """What a batch adds to its partition's tree, in stored form."""

    leaves: list[int]  # the leaf index of each record of the batch, in order
    nodes: list[tuple[int, int, bytes]]  # (partition, seq, hash)
    size: int
    root_hex: str


def nodes_query(partition: int, wanted: Iterable[NodeId]) -> Select[int, bytes] | None:
    """The query of the stored nodes among ``wanted``: one primary-key probe per node."""
    seqs = sorted({stored_index(level, idx) for level, idx in wanted})
    if not seqs:
        return None
    n = merkle_nodes.c
    return select(n.seq, n.hash).where(n.partition == partition, n.seq.in_(seqs))


def fetch_nodes(conn: Connection, partition: int, wanted: Iterable[NodeId]) -> dict[NodeId, bytes]:
    """The stored nodes among ``wanted``, in one query."""
    ids = {stored_index(level, idx): (level, idx) for level, idx in wanted}
    query = nodes_query(partition, ids.values())
    if query is None:
        return {}
    return {ids[seq]: bytes(h) for seq, h in conn.execute(query).all()}


class Trees(StoreBase):
    """Growing the trees with each batch, their heads, and proofs from their nodes."""

    _frontiers: dict[int, Frontier] | None = None

    def _grow(
        self, conn: Connection, partition: int, size: int, root_hex: str, records: Sequence[bytes]
    ) -> Growth:
        """The leaves and nodes ``records`` add to a tree stored at ``size`` / ``root_hex``."""
        if self._frontiers is None:
            self._frontiers = {}
        frontier = self._frontiers.get(partition)
        if frontier is None or frontier.size != size or frontier.root().hex() != root_hex:
            stored = fetch_nodes(conn, partition, frontier_nodes(size))
            frontier = Frontier.load(size, stored)
            if frontier.root().hex() != root_hex:
                raise ProofError(
                    f"partition {partition}: the stored tree nodes do not give the stored root"
                )
        else:
            frontier = frontier.copy()
        leaves = list(range(size, size + len(records)))
        # The nodes a run of appends completes are consecutive in creation order.
        first = stored_index(0, size)
        nodes = [(partition, first + k, h) for k, (_, _, h) in enumerate(frontier.extend(records))]
        self._frontiers[partition] = frontier  # used again only if the head matches
        return Growth(leaves, nodes, frontier.size, frontier.root().hex())

    # -- heads ----------------------------------------------------------------------------

    def tree_heads(self) -> list[TreeState]:
        """Every partition's committed tree head."""
        c = checkpoints.c
        with self._reading("reading tree heads", states=False) as conn:
            rows = conn.execute(
                select(c.partition, c.tree_size, c.tree_root).order_by(c.partition)
            ).all()
        return [TreeState(p, size, bytes.fromhex(root)) for p, size, root in rows]

    def tree_head(self, partition: int) -> TreeState | None:
        return next((h for h in self.tree_heads() if h.partition == partition), None)

    # -- proofs ---------------------------------------------------------------------------

    def _tree_size(self, conn: Connection, partition: int) -> int:
        size = conn.execute(
            select(checkpoints.c.tree_size).where(checkpoints.c.partition == partition)
        ).scalar()
        return int(size or 0)

    def _check_size(self, conn: Connection, partition: int, size: int) -> None:
        have = self._tree_size(conn, partition)
        if size > have:
            raise ProofError(f"partition {partition}'s tree has {have} leaves, not {size}")

    def inclusion_proof(self, partition: int, index: int, size: int) -> tuple[list[bytes], bytes]:
        """RFC 9162's audit path of leaf ``index`` in the tree of ``size``, and the leaf hash."""
        plan = inclusion_plan(index, size)
        with self._reading("reading an inclusion proof", states=False) as conn:
            self._check_size(conn, partition, size)
            nodes = fetch_nodes(conn, partition, {(0, index)} | {n for e in plan for n in e})
        leaf = nodes.get((0, index))
        if leaf is None:
            raise ProofError(f"partition {partition}: leaf {index} is missing from the tree")
        return prove(plan, lambda _wanted: nodes), leaf

    def consistency_proof(self, partition: int, old: int, new: int) -> list[bytes]:
        """RFC 9162's consistency proof from the tree of ``old`` leaves to that of ``new``."""
        plan = consistency_plan(old, new)
        with self._reading("reading a consistency proof", states=False) as conn:
            self._check_size(conn, partition, new)
            return prove(plan, lambda wanted: fetch_nodes(conn, partition, wanted))

    def roots_at(self, partition: int, sizes: Sequence[int]) -> list[bytes]:
        """The tree's root at each of ``sizes``, from the stored nodes."""
        plans = [frontier_nodes(s) for s in sizes]
        with self._reading("reading tree roots", states=False) as conn:
            self._check_size(conn, partition, max(sizes, default=0))
            nodes = fetch_nodes(conn, partition, {n for plan in plans for n in plan})
        return [prove([plan], lambda _w: nodes)[0] if plan else EMPTY_ROOT for plan in plans]

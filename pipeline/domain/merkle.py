"""Merkle trees over the archive, hashed as RFC 9162 (Certificate Transparency 2.0) says.

One tree per canonical-log partition; its leaves are the partition's archived
records in offset order, leaf ``i`` being the ``i``-th record archived (offsets
may skip, leaf indexes never do)::

    leaf hash = SHA-256(0x00 || record bytes)
    node hash = SHA-256(0x01 || left || right)
    root of the empty tree = SHA-256("")

A tree of ``n`` leaves splits at the largest power of two below ``n``, so every
node that exists is the root of a *complete* subtree: ``(level, index)`` covers
leaves ``index * 2**level`` up to ``(index + 1) * 2**level``. Those complete
nodes are all a store keeps. A tree's state between appends is its *frontier*
(the "compact range"): the roots of the complete subtrees that make up ``n``,
one per set bit of ``n``, largest first. Appending a leaf merges equal-sized
neighbours, which yields exactly the complete nodes that became whole:
O(log n) per leaf, never a recomputation.

Proofs are planned first (:func:`inclusion_plan`, :func:`consistency_plan`:
which complete nodes they need), then assembled from whatever holds the nodes,
so a store can fetch all of them in one query. Verification
(:func:`verify_inclusion`, :func:`verify_consistency`) follows RFC 9162
sections 2.1.3.2 and 2.1.4.2 step by step and needs nothing but hashes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sada.pipeline.domain.errors import ProofError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

NodeId = tuple[int, int]  # (level, index) of a complete subtree
NodeHashes = Mapping[NodeId, bytes]


def leaf_hash(record: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + record).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _largest_power_below(n: int) -> int:
    """The largest power of two strictly below ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def range_nodes(start: int, end: int) -> list[NodeId]:
    """The complete subtrees that make up leaves ``start``..``end - 1``, left to right.

    For the ranges RFC 9162's recursion visits (``start`` a multiple of a power
    of two at least ``end - start``), folding these from the right gives the
    range's Merkle tree hash: each split at the largest power of two below the
    length leaves a complete, aligned subtree on the left.
    """
    out: list[NodeId] = []
    while start < end:
        level = ((end - start).bit_length()) - 1
        # Aligned on its own size: the subtree exists as a node of the big tree.
        while start % (1 << level):
            level -= 1
        out.append((level, start >> level))
        start += 1 << level
    return out


def fold(hashes: Sequence[bytes]) -> bytes:
    """The root over complete-subtree roots given left to right, largest first."""
    if not hashes:
        return EMPTY_ROOT
    root = hashes[-1]
    for h in reversed(hashes[:-1]):
        root = node_hash(h, root)
    return root


def stored_index(level: int, index: int) -> int:
    """The position of complete node ``(level, index)`` among all nodes in the order they complete.

    Appending leaves completes nodes in a fixed order (a leaf, then the nodes
    it closes, lowest first); this numbers them 0, 1, 2, ... in that order, as
    Go's ``tlog.StoredHashIndex`` does. A store keyed by it only ever appends.
    """
    n = index
    for _ in range(level):
        n = (n << 1) | 1
    position = 0
    while n:
        position += n
        n >>= 1
    return position + level


def frontier_nodes(size: int) -> list[NodeId]:
    """The complete subtrees of a tree of ``size`` leaves: its frontier, largest first."""
    return range_nodes(0, size)


@dataclass(slots=True)
class Frontier:
    """A tree's state for appending: its size and the roots of its frontier's subtrees."""

    size: int = 0
    hashes: list[bytes] = field(default_factory=list)  # one per set bit of size, largest first

    def __post_init__(self) -> None:
        if len(self.hashes) != self.size.bit_count():
            raise ProofError(
                f"a tree of {self.size} leaves has {self.size.bit_count()} frontier "
                f"hashes, not {len(self.hashes)}"
            )

    @classmethod
    def load(cls, size: int, nodes: NodeHashes) -> Frontier:
        """The frontier of a stored tree, from its nodes (``frontier_nodes(size)`` suffice)."""
        try:
            return cls(size, [nodes[n] for n in frontier_nodes(size)])
        except KeyError as e:
            raise ProofError(f"tree of size {size}: node {e.args[0]} is missing") from e

    def copy(self) -> Frontier:
        return Frontier(self.size, list(self.hashes))

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add the leaf hash ``leaf``; the ``(level, index, hash)`` of every node it completed.

        The leaf itself comes first (level 0), then the nodes above it that are
        now whole, lowest first.
        """
        hashes = self.hashes
        index = self.size
        made = [(0, index, leaf)]
        h = leaf
        level = 0
        # Each trailing one bit of the old size is a subtree of the new one's size: merge.
        while (index >> level) & 1:
            h = node_hash(hashes.pop(), h)
            level += 1
            made.append((level, index >> level, h))
        hashes.append(h)
        self.size = index + 1
        return made

    def extend(self, records: Iterable[bytes]) -> list[tuple[int, int, bytes]]:
        """Append the leaves of ``records`` (record bytes); every node completed, in order."""
        made: list[tuple[int, int, bytes]] = []
        for record in records:
            made.extend(self.append(leaf_hash(record)))
        return made

    def root(self) -> bytes:
        return fold(self.hashes)


# -- proofs: plan (which nodes), then assemble (from fetched hashes) ------------------------

Plan = list[list[NodeId]]  # one entry per proof hash: the complete nodes it folds


def inclusion_plan(index: int, size: int) -> Plan:
    """The nodes of RFC 9162's inclusion proof (audit path) of leaf ``index`` in ``size``.

    Entries are in proof order (from the leaf upwards); each is the list of
    complete nodes whose fold is that proof hash.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of size {size}")
    plan: Plan = []
    lo, hi = 0, size
    # Walk down from the root, noting the sibling of every subtree entered.
    while hi - lo > 1:
        k = _largest_power_below(hi - lo)
        if index < lo + k:
            plan.append(range_nodes(lo + k, hi))
            hi = lo + k
        else:
            plan.append(range_nodes(lo, lo + k))
            lo = lo + k
    plan.reverse()
    return plan


def consistency_plan(old: int, new: int) -> Plan:
    """The nodes of RFC 9162's consistency proof from tree size ``old`` to ``new``.

    Empty when ``old`` is 0 or equal to ``new`` (nothing to prove).
    """
    if not 0 <= old <= new:
        raise ProofError(f"no consistency proof from size {old} to size {new}")
    if old == 0 or old == new:
        return []
    plan: Plan = []
    lo, hi = 0, new
    m = old
    whole = True  # SUBPROOF's b: the old tree is this very subtree (its hash is known)
    while m != hi - lo:
        k = _largest_power_below(hi - lo)
        if m <= k:
            plan.append(range_nodes(lo + k, hi))
            hi = lo + k
        else:
            plan.append(range_nodes(lo, lo + k))
            lo, m, whole = lo + k, m - k, False
    if not whole:
        plan.append(range_nodes(lo, hi))
    plan.reverse()
    return plan


def plan_nodes(plan: Plan) -> set[NodeId]:
    return {node for entry in plan for node in entry}


def assemble(plan: Plan, nodes: NodeHashes) -> list[bytes]:
    """The proof hashes of ``plan`` from fetched ``nodes``."""
    try:
        return [fold([nodes[n] for n in entry]) for entry in plan]
    except KeyError as e:
        raise ProofError(f"tree node {e.args[0]} is missing") from e


def prove(plan: Plan, fetch: Callable[[set[NodeId]], NodeHashes]) -> list[bytes]:
    """Assemble ``plan`` from the nodes ``fetch`` returns for the set it is given."""
    return assemble(plan, fetch(plan_nodes(plan)))


def root_at(size: int, fetch: Callable[[set[NodeId]], NodeHashes]) -> bytes:
    """The root of the tree's first ``size`` leaves, from stored complete nodes."""
    return prove([frontier_nodes(size)], fetch)[0] if size else EMPTY_ROOT


# -- verification (RFC 9162 2.1.3.2 and 2.1.4.2) --------------------------------------------


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree ``root`` of ``size``."""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows the tree ``old_root`` of ``old`` leaves a prefix of ``new_root``."""
    if not 0 <= old <= new:
        return False
    if old == new:
        return not proof and old_root == new_root
    if old == 0:
        return not proof  # the empty tree is a prefix of every tree
    if not proof:
        return False
    path = list(proof)
    if old & (old - 1) == 0:  # a power of two: the old root is the proof's first hash
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "NodeHashes",
    "NodeId",
    "Plan",
    "assemble",
    "consistency_plan",
    "fold",
    "frontier_nodes",
    "inclusion_plan",
    "leaf_hash",
    "node_hash",
    "plan_nodes",
    "prove",
    "range_nodes",
    "root_at",
    "stored_index",
    "verify_consistency",
    "verify_inclusion",
]

"""The audit of the archive's trees: recompute them from the records and hold every head to them.

The hash chain alone cannot catch a rewrite by someone who can write the
database: they recompute every hash after the record they changed. Signed
checkpoints can, since nobody without the signing key can sign a new one. The
audit therefore recomputes each partition's Merkle tree from the archived
records (never trusting the stored nodes), in the same pass as the chain
check, and then holds each signed checkpoint to it:

1. its signature verifies with a known verifier key;
2. the root recomputed at its tree size equals its root: the archive still
   holds, unchanged and in order, every record the checkpoint covered;
3. the store's consistency proof from its size to the current size verifies
   from its root to the recomputed current root: the stored tree, from which
   proofs are served, agrees with the records too.

The first checkpoint that fails is named. Checkpoints come from an auditor's
file (``sada audit checkpoints --save``) and from the store itself.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sada.consumers.archive import ArchiveRow, VerifyReport, verify
from sada.pipeline.domain.errors import ProofError, SignatureError, UnknownKeyError
from sada.pipeline.domain.merkle import EMPTY_ROOT, Frontier, leaf_hash, verify_consistency
from sada.pipeline.domain.notary import SignedCheckpoint, TreeState
from sada.pipeline.domain.note import Verifier, open_note
from sada.pipeline.domain.ports import Checkpoint
from sada.pipeline.domain.tlog_checkpoint import TreeHead

# (partition, old size, new size) -> the store's consistency proof, from its stored nodes.
ConsistencyProof = Callable[[int, int, int], list[bytes]]


@dataclass(frozen=True, slots=True)
class HeldCheckpoint:
    """A signed checkpoint to hold the archive to, and where it came from (for the report).

    ``trusted``: an auditor's own copy, which must verify with the keys given.
    The store's copies need not: one signed by a key the auditor did not name
    (a retired key, with ``--key`` the new one) is left out rather than failed.
    """

    note: str
    where: str  # e.g. "checkpoints.jsonl line 4" or "the store's checkpoint #12"
    trusted: bool = True


@dataclass(slots=True)
class TreeReport:
    chain: VerifyReport
    checked: int = 0  # checkpoints held to the archive
    roots: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # p -> (size, root)
    first_bad: tuple[int | None, str] | None = None  # (partition, reason)

    @property
    def ok(self) -> bool:
        return self.chain.ok and self.first_bad is None


class _Trees:
    """Recomputes every partition's tree from the records passing by; roots at wanted sizes."""

    def __init__(self, wanted: dict[int, set[int]]) -> None:
        self.wanted = wanted
        self.frontiers: dict[int, Frontier] = defaultdict(Frontier)
        self.roots: dict[tuple[int, int], bytes] = {}

    def tap(self, rows: Iterable[ArchiveRow]) -> Iterator[ArchiveRow]:
        for row in rows:
            f = self.frontiers[row.partition]
            f.append(leaf_hash(row.record))
            if f.size in self.wanted.get(row.partition, ()):
                self.roots[(row.partition, f.size)] = f.root()
            yield row

    def root(self, partition: int, size: int) -> bytes | None:
        if size == 0:
            return EMPTY_ROOT
        return self.roots.get((partition, size))

    def size(self, partition: int) -> int:
        f = self.frontiers.get(partition)
        return 0 if f is None else f.size


def audit(
    rows: Iterable[ArchiveRow],
    chain_heads: dict[int, str],
    tree_heads: Sequence[TreeState],
    held: Sequence[HeldCheckpoint],
    verifiers: Sequence[Verifier],
    consistency_proof: ConsistencyProof,
    deployment: str | None = None,
) -> TreeReport:
    """Check the chains and trees of ``rows`` (in (partition, offset) order) against ``held``.

    ``chain_heads`` are the checkpoints' head hashes (as :func:`archive.verify`
    takes them); ``tree_heads`` the store's tree heads, whose roots must be
    the recomputed ones too.
    """
    opened: list[tuple[HeldCheckpoint, TreeHead | None, str | None]] = []
    for h in held:
        try:
            parsed = TreeHead.parse(open_note(h.note, verifiers).text)
            parsed.partition(deployment)
            opened.append((h, parsed, None))
        except UnknownKeyError as e:
            if h.trusted:
                opened.append((h, None, str(e)))
        except SignatureError as e:
            opened.append((h, None, str(e)))
    wanted: dict[int, set[int]] = defaultdict(set)
    for _h, maybe, _err in opened:
        if maybe is not None:
            wanted[maybe.partition()].add(maybe.size)
    for t in tree_heads:
        wanted[t.partition].add(t.size)
    trees = _Trees(wanted)
    report = TreeReport(verify(trees.tap(rows), chain_heads))

    def fail(partition: int | None, reason: str) -> None:
        if report.first_bad is None:
            report.first_bad = (partition, reason)

    for p in sorted(trees.frontiers):
        report.roots[p] = (trees.size(p), trees.frontiers[p].root())
    for t in tree_heads:
        recomputed = trees.root(t.partition, t.size)
        if recomputed != t.root:
            fail(
                t.partition,
                f"partition {t.partition}: the stored tree head (size {t.size}) does not match "
                f"the tree of the archived records"
                + (
                    ""
                    if recomputed is not None
                    else f" (the archive has {trees.size(t.partition)})"
                ),
            )
    for h, head, error in opened:
        if head is None:
            fail(None, f"{h.where}: {error}")
            continue
        report.checked += 1
        p = head.partition()
        have = trees.size(p)
        if head.size > have:
            fail(
                p,
                f"partition {p}: {h.where} (tree size {head.size}) is NOT consistent with the "
                f"archive: it covers {head.size} records, the archive holds {have}",
            )
            continue
        if trees.root(p, head.size) != head.root:
            fail(
                p,
                f"partition {p}: {h.where} (tree size {head.size}) is NOT consistent with the "
                f"archive: a record among its first {head.size} was changed, removed or moved",
            )
            continue
        current = trees.frontiers[p].root() if have else EMPTY_ROOT
        try:
            proof = consistency_proof(p, head.size, have)
            good = verify_consistency(head.size, have, head.root, current, proof)
        except ProofError as e:
            good, why = False, str(e)
        else:
            why = "the consistency proof from the stored tree does not verify"
        if not good:
            fail(
                p,
                f"partition {p}: {h.where} (tree size {head.size}): the store's tree is not the "
                f"archive's ({why})",
            )
    return report


class AuditedStore(Protocol):
    """What :func:`audit_store` reads of the store."""

    def checkpoints(self) -> list[Checkpoint]: ...

    def tree_heads(self) -> list[TreeState]: ...

    def iter_archive(self, partition: int | None = None) -> Iterator[ArchiveRow]: ...

    def consistency_proof(self, partition: int, old: int, new: int) -> list[bytes]: ...

    def signed_checkpoints(
        self, after_seq: int | None, after_time: datetime | None, limit: int | None
    ) -> list[SignedCheckpoint]: ...

    def signing_keys(self) -> list[dict[str, Any]]: ...

    def deployment(self) -> str | None: ...


def audit_store(
    store: AuditedStore,
    held: Sequence[HeldCheckpoint] = (),
    verifiers: Sequence[Verifier] | None = None,
) -> TreeReport:
    """The store's chains, and its trees recomputed from the records held to every checkpoint.

    ``held`` (an auditor's) come first, then the store's own signed
    checkpoints. Without ``verifiers`` the keys the store lists are used: a
    key swapped in the database cannot make an auditor's checkpoints pass,
    since it did not sign them. Heads are read before the archive, so batches
    committed meanwhile only add records after them.
    """
    chain_heads = {c.partition: c.head_hash for c in store.checkpoints()}
    tree_heads = store.tree_heads()
    own = store.signed_checkpoints(None, None, None)
    if verifiers is None:
        verifiers = [Verifier.parse(k["verifier_key"]) for k in store.signing_keys()]
    everything = [
        *held,
        *(HeldCheckpoint(c.note, f"the store's checkpoint #{c.seq}", False) for c in own),
    ]
    return audit(
        store.iter_archive(),
        chain_heads,
        tree_heads,
        everything,
        verifiers,
        store.consistency_proof,
        store.deployment(),
    )

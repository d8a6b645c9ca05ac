"""The archive's hash chain: how each archived log record is sealed, and how to check it.

Every canonical-log partition has its own chain. The first archived record of
a partition links to :data:`GENESIS_HASH`; each record's hash is::

    hash = sha256(prev_hash + "\\n" + str(partition) + "\\n" + str(offset) + "\\n" + record)

in bytes: ``prev_hash`` as its 64 lowercase hex ASCII characters, partition
and offset as ASCII decimal integers, ``record`` as the exact record bytes of
the log (:mod:`sada.pipeline.domain.logcodec`), and the result written as 64
lowercase hex characters. Binding partition and offset into the hash means a
record cannot be moved without breaking the chain.

What the chain proves: changing any byte of a record, any stored hash, or
deleting or reordering records anywhere but at the very end breaks a link that
:func:`verify` finds. Removing records from the end (or rewriting every hash
after some point) is only detectable against a head hash kept elsewhere: pass
the checkpoints' head hashes as ``heads``, and publish them outside the
database for the strongest guarantee.

Offsets need not be contiguous (a Kafka log may skip offsets, e.g. for
transaction markers); a missing record shows as a broken link, reported as a
gap when offsets are skipped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sada.pipeline.domain.ports import GENESIS_HASH

__all__ = ["GENESIS_HASH", "ArchiveRow", "VerifyReport", "chain_hash", "verify"]


@dataclass(frozen=True, slots=True)
class ArchiveRow:
    partition: int
    offset: int
    record: bytes
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    records: int  # how many archived records were checked
    first_bad: tuple[int, int, str] | None  # (partition, offset, reason) of the first fault
    partitions: int = 0


def chain_hash(prev_hash: str, partition: int, offset: int, record: bytes) -> str:
    """The hash sealing ``record`` at (``partition``, ``offset``) after ``prev_hash``."""
    h = hashlib.sha256()
    h.update(f"{prev_hash}\n{partition}\n{offset}\n".encode("ascii"))
    h.update(record)
    return h.hexdigest()


def verify(rows: Iterable[ArchiveRow], heads: Mapping[int, str] | None = None) -> VerifyReport:
    """Check the chains of ``rows``, given in (partition, offset) order.

    ``heads`` (partition -> hash of its last archived record, as the
    checkpoints held it) additionally catches records removed from the end of
    a chain: each head must be the hash of some record of its partition.
    Records appended after the heads were read do not matter. Every row is
    counted; the first fault found is reported.
    """
    first_bad: tuple[int, int, str] | None = None
    count = 0
    partitions = 0
    last: tuple[int, int, str] | None = None  # (partition, offset, hash) of the previous row
    last_offsets: dict[int, int] = {}
    heads = dict(heads or {})
    heads_found: set[int] = set()

    def fault(partition: int, offset: int, reason: str) -> None:
        nonlocal first_bad
        if first_bad is None:
            first_bad = (partition, offset, reason)

    for row in rows:
        count += 1
        p, o = row.partition, row.offset
        if last is None or p != last[0]:
            if last is not None and p < last[0]:
                fault(p, o, f"out of order: partition {p} after partition {last[0]}")
            partitions += 1
            expected_prev, prev_offset = GENESIS_HASH, None
        else:
            expected_prev, prev_offset = last[2], last[1]
            if o <= prev_offset:
                fault(p, o, f"out of order: offset {o} after offset {prev_offset}")
        if row.prev_hash != expected_prev:
            if prev_offset is None:
                fault(p, o, "chain does not start at the genesis hash: earlier records missing")
            elif o > prev_offset + 1:
                fault(p, o, f"gap: records missing at offsets {prev_offset + 1}..{o - 1}")
            else:
                fault(p, o, "prev_hash does not match the hash of the previous record")
        if chain_hash(row.prev_hash, p, o, row.record) != row.hash:
            fault(p, o, "hash mismatch: record or hash altered")
        last = (p, o, row.hash)
        last_offsets[p] = o
        if heads.get(p) == row.hash:
            heads_found.add(p)

    for p, head in sorted(heads.items()):
        if head == GENESIS_HASH or p in heads_found:
            continue
        if p in last_offsets:
            fault(
                p,
                last_offsets[p],
                "records missing at the end: the checkpoint's head hash is not in the chain",
            )
        else:
            fault(p, -1, "records missing: the checkpoint has a head hash, the archive nothing")
    return VerifyReport(first_bad is None, count, first_bad, partitions)

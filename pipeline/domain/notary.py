"""Signing the archive's tree heads: which heads are due, the signed checkpoints, the store port.

Each partition's projector keeps its tree (and its head: size and root) in the
store, in the same transaction as the archive. The notary reads the committed
heads, signs those that grew since the last checkpoint its key signed, and
stores the signed checkpoints, which then go out to ``sada.checkpoints``
through an outbox. Ed25519 signatures are deterministic, so two workers
signing the same head write the same note: the store keeps one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sada.pipeline.domain.note import Signer
from sada.pipeline.domain.tlog_checkpoint import TreeHead, origin


@dataclass(frozen=True, slots=True)
class TreeState:
    """A partition's tree as committed: ``size`` leaves, ``root`` (32 bytes)."""

    partition: int
    size: int
    root: bytes


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """One signed checkpoint as stored: ``note`` is the whole signed note text."""

    partition: int
    size: int
    root: bytes
    key: str  # "<name>+<key ID>" of the key that signed it
    note: str
    signed_at: datetime
    seq: int | None = None  # the store's sequence number, once stored

    def as_json(self) -> dict[str, object]:
        import base64

        return {
            "seq": self.seq,
            "partition": self.partition,
            "tree_size": self.size,
            "root_hash": base64.b64encode(self.root).decode(),
            "key": self.key,
            "signed_at": self.signed_at.isoformat().replace("+00:00", "Z"),
            "checkpoint": self.note,
        }


class NotaryStore(Protocol):
    """What the notary needs of the store."""

    def tree_heads(self) -> list[TreeState]: ...

    def latest_signed_sizes(self, key: str) -> dict[int, int]:
        """Partition -> the largest tree size ``key`` has signed."""
        ...

    def add_signed_checkpoints(self, signed: Iterable[SignedCheckpoint]) -> None:
        """Store these (a checkpoint stored before, same partition, size and key, is kept)."""
        ...

    def unpublished_checkpoints(self, limit: int = 1000) -> list[SignedCheckpoint]: ...

    def mark_checkpoints_published(self, seqs: Iterable[int]) -> None: ...


def key_label(signer: Signer) -> str:
    return f"{signer.name}+{signer.key_id:08x}"


def due(heads: Iterable[TreeState], signed: Mapping[int, int]) -> list[TreeState]:
    """The heads that grew since their partition's last signed checkpoint (or never had one)."""
    return [h for h in heads if h.size > signed.get(h.partition, -1)]


def sign_head(signer: Signer, deployment: str, head: TreeState, now: datetime) -> SignedCheckpoint:
    body = TreeHead(origin(deployment, head.partition), head.size, head.root).text()
    return SignedCheckpoint(
        head.partition, head.size, head.root, key_label(signer), signer.sign(body), now
    )

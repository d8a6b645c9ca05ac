"""The small interface between the projector and its store (read model + archive).

The projector folds canonical-log partitions and hands each batch's effects
to a :class:`ProjectionStore`, which writes them, the archive records and the
partition checkpoint in ONE transaction: a crash before commit leaves no
effect, a crash after commit leaves no gap, so redelivery changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sada.pipeline.domain.merkle import EMPTY_ROOT
from sada.pipeline.domain.model import Escalated, ResponsePosted, Stance, SubmissionState
from sada.pipeline.domain.notify import Follow, Notification

GENESIS_HASH = "0" * 64
EMPTY_ROOT_HEX = EMPTY_ROOT.hex()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    partition: int
    next_offset: int = 0  # first canonical-log offset not yet applied
    clock: datetime | None = None  # the partition's pipeline clock after the last record
    head_hash: str = GENESIS_HASH  # hash of the last archived record of this partition
    # What the partition's sequencer holds (JSON): watermarks and the log offsets of
    # events waiting for the clock or for their submission. Small: in-flight only.
    pending: str = ""
    tree_size: int = 0  # leaves of the partition's Merkle tree (its archived records)
    tree_root: str = EMPTY_ROOT_HEX  # the tree's RFC 9162 root, hex


@dataclass(frozen=True, slots=True)
class AppliedEvent:
    """One event record of the log as applied: the ledger and the timeline are made of these."""

    key: str  # "<source> <id>"
    offset: int
    submission_id: str
    type: str
    time: datetime  # the event's own time
    at: datetime  # when it took effect
    late: bool
    effective: bool
    note: str


@dataclass(frozen=True, slots=True)
class Rejection:
    """An input that will not take effect, and why: one ``sada.dlq`` record, through the outbox."""

    key: str  # "<source> <id>", or "@<topic>/<partition>/<offset>" for an unnamed input
    offset: int  # the log record that carried it
    src: tuple[str, int, int]  # the input position (topic, partition, offset)
    type: str
    reason: str
    detail: str
    value: bytes | None  # the input (re-encoded when the projector decided the rejection)
    at: datetime | None  # the pipeline clock when it was decided


@dataclass(slots=True)
class BatchWrite:
    partition: int
    checkpoint: Checkpoint  # the checkpoint after this batch
    archive: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, record bytes)
    applied: list[AppliedEvent] = field(default_factory=list)
    states: list[SubmissionState] = field(default_factory=list)  # upsert, last version wins
    stances: list[tuple[str, str, Stance | None, datetime]] = field(default_factory=list)
    responses: list[tuple[ResponsePosted, datetime, bool]] = field(default_factory=list)
    escalations: list[Escalated] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    follows: list[Follow] = field(default_factory=list)  # in decision order
    # (log offset of the record that decided it, notification), in decision order
    notifications: list[tuple[int, Notification]] = field(default_factory=list)


class ProjectionStore(Protocol):
    def load(self, partition: int) -> tuple[Checkpoint, list[SubmissionState]]: ...

    def load_checkpoint(self, partition: int) -> Checkpoint: ...

    def stances(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Stance]: ...

    def seen(self, keys: Iterable[str]) -> set[str]:
        """The keys already applied or rejected: a redelivery of either changes nothing."""
        ...

    def taken_tracking_codes(self, codes: Iterable[str]) -> set[str]:
        """The tracking codes some submission (in any partition) already has."""
        ...

    def archived(self, partition: int, offsets: Iterable[int]) -> dict[int, bytes]:
        """The archived log records at ``offsets`` of ``partition``."""
        ...

    def write(self, batch: BatchWrite) -> Checkpoint:
        """Write ``batch`` in one transaction; the partition's checkpoint as stored after it."""
        ...

    def rebuilding(self) -> AbstractContextManager[None]:
        """A block of writes into a store being rebuilt from scratch (replay).

        The store may trade durability for speed inside it (a crash mid-way
        means rebuilding again) and must have made everything durable when the
        block exits normally.
        """
        ...

    def unpublished_escalations(
        self, limit: int = 1000, partitions: Iterable[int] | None = None
    ) -> list[Escalated]:
        """Oldest first; of the submissions in ``partitions`` only, when given."""
        ...

    def mark_published(self, event_ids: Iterable[str]) -> None: ...

    def unpublished_rejections(
        self, limit: int = 1000, partitions: Iterable[int] | None = None
    ) -> list[Rejection]: ...

    def mark_rejections_published(self, keys: Iterable[str]) -> None: ...

    def followers(self, submission_ids: Iterable[str]) -> dict[str, dict[str, str | None]]:
        """Who follows each submission (recipient -> source), as committed."""
        ...

    def unpublished_notifications(
        self, limit: int = 1000, partitions: Iterable[int] | None = None
    ) -> list[Notification]:
        """Oldest first, in decision order per partition (of ``partitions``, if given)."""
        ...

    def mark_notifications_published(
        self, ids: Iterable[str], routes: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        """Mark published; with ``routes`` (id -> webhook endpoints), queue their deliveries."""
        ...


class ProjectorStore(ProjectionStore, Protocol):
    """What the live projector stage needs beyond folding: upkeep off the commit path, closing."""

    def checkpoint_in_background(self) -> None: ...

    def close(self) -> None: ...


StoreFactory = Callable[[], ProjectorStore]
"""Opens the projector's store; picklable, so a projector process opens its own."""


class PipelineView(Protocol):
    """What readers (metrics, dashboard, health) may ask of a running worker."""

    def clock(self) -> datetime | None:
        """The pipeline clock: the least event time every input partition has reached."""
        ...

    async def lag(self) -> int:
        """Canonical-log records the projector has not applied yet."""
        ...

    def stages_up(self) -> dict[str, bool]:
        """Each stage: running, in a worker that has not failed."""
        ...

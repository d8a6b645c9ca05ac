"""An in-memory :class:`~sada.pipeline.domain.ports.ProjectionStore`: projection without SQL.

Used by tests of the decision core, by benchmarks of the pure fold and by
``sada replay --as-of`` when it only needs state. It keeps what the SQL store
keeps except the archive's hash chain (the archive lives in the SQL store).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import TypeVar

from sada.pipeline.domain.model import Escalated, Stance, SubmissionState
from sada.pipeline.domain.notify import Notification, apply_follows
from sada.pipeline.domain.ports import AppliedEvent, BatchWrite, Checkpoint, Rejection

T = TypeVar("T")


class MemoryStore:
    def __init__(self) -> None:
        self.checkpoints: dict[int, Checkpoint] = {}
        self.states: dict[str, tuple[int, SubmissionState]] = {}  # id -> (partition, state)
        self.votes: dict[tuple[str, str], Stance] = {}
        self.events: dict[str, AppliedEvent] = {}
        self.escalations: dict[str, Escalated] = {}
        self.published: set[str] = set()
        self.archive: dict[int, list[tuple[int, bytes]]] = {}
        self.rejections: dict[str, Rejection] = {}
        self.rejections_published: set[str] = set()
        self._rejection_partition: dict[str, int] = {}
        self.follows: dict[str, dict[str, str | None]] = {}  # submission -> recipient -> source
        self.notifications: dict[str, tuple[int, int, int, Notification]] = {}  # id -> order
        self.notifications_published: set[str] = set()
        self.deliveries: dict[tuple[str, str], str] = {}  # (notification, endpoint) -> state
        self.writes = 0

    def load(self, partition: int) -> tuple[Checkpoint, list[SubmissionState]]:
        states = [s for p, s in self.states.values() if p == partition]
        return self.load_checkpoint(partition), states

    def load_checkpoint(self, partition: int) -> Checkpoint:
        return self.checkpoints.get(partition, Checkpoint(partition))

    def stances(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Stance]:
        return {p: self.votes[p] for p in pairs if p in self.votes}

    def seen(self, keys: Iterable[str]) -> set[str]:
        return {k for k in keys if k in self.events or k in self.rejections}

    def taken_tracking_codes(self, codes: Iterable[str]) -> set[str]:
        taken = {s.tracking_code for _, s in self.states.values()}
        return {c for c in codes if c in taken}

    def archived(self, partition: int, offsets: Iterable[int]) -> dict[int, bytes]:
        wanted = set(offsets)
        return {o: raw for o, raw in self.archive.get(partition, []) if o in wanted}

    def write(self, batch: BatchWrite) -> Checkpoint:
        current = self.load_checkpoint(batch.partition)
        if batch.archive and batch.archive[0][0] != current.next_offset:
            raise ValueError(
                f"partition {batch.partition}: batch starts at offset {batch.archive[0][0]}, "
                f"checkpoint is at {current.next_offset}"
            )
        self.archive.setdefault(batch.partition, []).extend(batch.archive)
        for e in batch.applied:
            self.events[e.key] = e
        for s in batch.states:
            self.states[s.submission_id] = (batch.partition, s)
        for sid, voter, stance, _at in batch.stances:
            if stance is None:
                self.votes.pop((sid, voter), None)
            else:
                self.votes[(sid, voter)] = stance
        for esc in batch.escalations:
            self.escalations.setdefault(esc.event_id, esc)
        for rej in batch.rejections:
            self.rejections.setdefault(rej.key, rej)
            self._rejection_partition.setdefault(rej.key, batch.partition)
        for f in batch.follows:
            apply_follows(self.follows.setdefault(f.submission_id, {}), (f,))
        for i, (offset, n) in enumerate(batch.notifications):
            self.notifications.setdefault(n.id, (batch.partition, offset, i, n))
        checkpoint = replace(batch.checkpoint)
        self.checkpoints[batch.partition] = checkpoint
        self.writes += 1
        return checkpoint

    def rebuilding(self) -> AbstractContextManager[None]:
        return nullcontext()  # nothing to make durable

    def unpublished_escalations(
        self, limit: int = 1000, partitions: Iterable[int] | None = None
    ) -> list[Escalated]:
        def partition(i: str) -> int:
            return self.states.get(self.escalations[i].submission_id, (-1, None))[0]

        todo = _outbox(self.escalations, self.published, partition, partitions)
        return sorted(todo, key=lambda e: (e.time, e.event_id))[:limit]

    def mark_published(self, event_ids: Iterable[str]) -> None:
        self.published.update(event_ids)

    def unpublished_rejections(
        self, limit: int = 1000, partitions: Iterable[int] | None = None
    ) -> list[Rejection]:
        todo = _outbox(
            self.rejections,
            self.rejections_published,
            lambda k: self._rejection_partition.get(k, -1),
            partitions,
        )
        return sorted(todo, key=lambda r: (r.offset, r.key))[:limit]

    def mark_rejections_published(self, keys: Iterable[str]) -> None:
        self.rejections_published.update(keys)

    def followers(self, submission_ids: Iterable[str]) -> dict[str, dict[str, str | None]]:
        return {s: dict(self.follows[s]) for s in submission_ids if self.follows.get(s)}

    def unpublished_notifications(
        self, limit: int = 1000, partitions: Iterable[int] | None = None
    ) -> list[Notification]:
        todo = _outbox(
            self.notifications,
            self.notifications_published,
            lambda k: self.notifications[k][0],
            partitions,
        )
        return [t[3] for t in sorted(todo, key=lambda t: t[:3])][:limit]

    def mark_notifications_published(
        self, ids: Iterable[str], routes: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        todo = list(ids)
        self.notifications_published.update(todo)
        for nid in todo:
            for endpoint in (routes or {}).get(nid, ()):
                self.deliveries.setdefault((nid, endpoint), "pending")


def _outbox(
    items: dict[str, T],
    published: set[str],
    partition_of: Callable[[str], int],
    partitions: Iterable[int] | None,
) -> list[T]:
    """The unpublished items, of ``partitions`` only when given."""
    wanted = None if partitions is None else set(partitions)
    return [
        item
        for key, item in items.items()
        if key not in published and (wanted is None or partition_of(key) in wanted)
    ]

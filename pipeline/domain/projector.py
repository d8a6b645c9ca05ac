"""Applies batches of one canonical-log partition: fold, then one store transaction.

For each batch the projector prefetches what the fold needs (voter stances,
already-applied event keys), folds the records in order, and writes every
effect, the archive records and the new checkpoint in one transaction. Offsets
below the checkpoint are skipped, so a redelivered batch changes nothing. If a
write fails the in-memory fold is ahead of the store: the owner must discard
this projector and build a new one from the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sada.pipeline.domain.fold import EventRecord, PartitionFold, Step, TickRecord
from sada.pipeline.domain.logcodec import decode
from sada.pipeline.domain.model import (
    Escalated,
    ResponsePosted,
    SatisfactionRated,
    Stance,
    VoteCast,
    VoteRetracted,
)
from sada.pipeline.domain.ports import AppliedEvent, BatchWrite, Checkpoint, ProjectionStore
from sada.pipeline.domain.rules import Rules


class _BatchStances:
    """Stances prefetched for one batch, with the batch's own changes on top."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], Stance | None] = {}

    def get(self, submission_id: str, voter_id: str) -> Stance | None:
        return self.data.get((submission_id, voter_id))

    def set(self, submission_id: str, voter_id: str, stance: Stance | None) -> None:
        self.data[(submission_id, voter_id)] = stance


@dataclass(slots=True)
class BatchResult:
    applied: int = 0  # records applied (events and ticks)
    skipped: int = 0  # records below the checkpoint (redelivered)
    duplicates: int = 0  # events whose key was applied before
    escalations: list[Escalated] = field(default_factory=list)
    first_response_hours: list[tuple[str, float]] = field(default_factory=list)  # (kind, hours)
    resolution_hours: list[tuple[str, float]] = field(default_factory=list)
    satisfaction: list[tuple[str, int]] = field(default_factory=list)  # (unit, rating)
    clock: datetime | None = None


class Projector:
    def __init__(self, rules: Rules, store: ProjectionStore, partition: int) -> None:
        self.rules = rules
        self.store = store
        self.partition = partition
        checkpoint, states = store.load(partition)
        self.checkpoint = checkpoint
        self._stances = _BatchStances()
        # The batch's event keys already applied, then those it applies: a plain set,
        # refilled by each prefetch.
        self._ledger: set[str] = set()
        self.fold = PartitionFold(rules, self._stances, self._ledger, states, checkpoint.clock)

    @property
    def next_offset(self) -> int:
        return self.checkpoint.next_offset

    def apply_batch(self, records: Sequence[tuple[int, bytes]]) -> BatchResult:
        """Apply ``(offset, record bytes)`` pairs of this partition, in offset order."""
        result = BatchResult()
        start = self.checkpoint.next_offset
        todo = [r for r in records if r[0] >= start]
        result.skipped = len(records) - len(todo)
        if not todo:
            return result
        # (record, CloudEvent type): the CloudEvents themselves are not kept, a
        # large batch of them would weigh more than everything else it holds.
        decoded: list[tuple[EventRecord | TickRecord, str | None]] = []
        for _, raw in todo:
            rec, ce = decode(raw)
            decoded.append((rec, None if ce is None else ce["type"]))
        self._prefetch(decoded)

        batch = BatchWrite(partition=self.partition, checkpoint=self.checkpoint, archive=todo)
        fold = self.fold
        changed: set[str] = set()
        escalations = batch.escalations
        for (offset, _raw), (rec, type_) in zip(todo, decoded, strict=True):
            step = fold.apply(rec)
            if step.changed:
                changed |= step.changed
            if step.escalations:
                escalations.extend(step.escalations)
            if type_ is not None:
                self._record_event(batch, result, offset, rec, type_, step)
        result.applied = len(todo)
        states = fold.states
        batch.states = [states[sid] for sid in sorted(changed)]
        batch.checkpoint = Checkpoint(
            partition=self.partition,
            next_offset=todo[-1][0] + 1,
            clock=fold.clock,
            head_hash=self.checkpoint.head_hash,  # the store continues the chain from here
        )
        self.checkpoint = self.store.write(batch)
        result.escalations = escalations
        result.clock = fold.clock
        return result

    def _record_event(
        self,
        batch: BatchWrite,
        result: BatchResult,
        offset: int,
        rec: EventRecord | TickRecord,
        type_: str,
        step: Step,
    ) -> None:
        assert isinstance(rec, EventRecord)  # only event records carry a CloudEvent
        event = rec.event
        if step.duplicate:
            result.duplicates += 1
            return
        at = step.at or rec.at
        batch.applied.append(
            AppliedEvent(
                event.key,
                offset,
                event.submission_id,
                type_,
                event.time,
                at,
                rec.late,
                step.effective,
                step.note,
            )
        )
        if step.stance_change is not None:
            sid, voter, stance = step.stance_change
            batch.stances.append((sid, voter, stance, at))
        if isinstance(event, ResponsePosted):
            batch.responses.append((event, at, step.effective))
        rating = event.rating if isinstance(event, SatisfactionRated) and step.effective else None
        if step.first_response_hours is None and step.resolution_hours is None and rating is None:
            return  # most events: no figure to report
        state = self.fold.states.get(event.submission_id)
        if state is not None:
            if step.first_response_hours is not None:
                result.first_response_hours.append((state.kind, step.first_response_hours))
            if step.resolution_hours is not None:
                result.resolution_hours.append((state.kind, step.resolution_hours))
            if rating is not None:
                result.satisfaction.append((state.unit_id, rating))

    def _prefetch(self, decoded: Iterable[tuple[EventRecord | TickRecord, str | None]]) -> None:
        pairs: set[tuple[str, str]] = set()
        keys: set[str] = set()
        for rec, _type in decoded:
            if isinstance(rec, EventRecord):
                event = rec.event
                keys.add(event.key)
                if isinstance(event, VoteCast | VoteRetracted):
                    pairs.add((event.submission_id, event.voter_id))
        known = self.store.stances(pairs)
        self._stances.data = {p: known.get(p) for p in pairs}
        self._ledger.clear()
        self._ledger.update(self.store.seen(keys))

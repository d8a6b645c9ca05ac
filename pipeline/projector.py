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
from typing import Any

from sada.pipeline.fold import EventRecord, PartitionFold, Step, TickRecord
from sada.pipeline.logcodec import decode
from sada.pipeline.model import (
    Escalated,
    ResponsePosted,
    Stance,
    VoteCast,
    VoteRetracted,
)
from sada.pipeline.ports import AppliedEvent, BatchWrite, Checkpoint, ProjectionStore
from sada.pipeline.rules import Rules


class _BatchStances:
    """Stances prefetched for one batch, with the batch's own changes on top."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], Stance | None] = {}

    def get(self, submission_id: str, voter_id: str) -> Stance | None:
        return self.data.get((submission_id, voter_id))

    def set(self, submission_id: str, voter_id: str, stance: Stance | None) -> None:
        self.data[(submission_id, voter_id)] = stance


class _BatchLedger:
    def __init__(self) -> None:
        self.keys: set[str] = set()

    def __contains__(self, key: object) -> bool:
        return key in self.keys

    def add(self, key: str) -> None:
        self.keys.add(key)


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
        self._ledger = _BatchLedger()
        self.fold = PartitionFold(rules, self._stances, self._ledger, states, checkpoint.clock)

    @property
    def next_offset(self) -> int:
        return self.checkpoint.next_offset

    def apply_batch(self, records: Sequence[tuple[int, bytes]]) -> BatchResult:
        """Apply ``(offset, record bytes)`` pairs of this partition, in offset order."""
        result = BatchResult()
        todo = [(o, raw) for o, raw in records if o >= self.checkpoint.next_offset]
        result.skipped = len(records) - len(todo)
        if not todo:
            return result
        decoded: list[tuple[int, bytes, Any, dict[str, Any] | None]] = []
        for offset, raw in todo:
            rec, ce = decode(raw)
            decoded.append((offset, raw, rec, ce))
        self._prefetch(rec for _, _, rec, _ in decoded)

        batch = BatchWrite(partition=self.partition, checkpoint=self.checkpoint)
        changed: set[str] = set()
        for offset, raw, rec, ce in decoded:
            step = self.fold.apply(rec)
            batch.archive.append((offset, raw))
            changed |= step.changed
            batch.escalations.extend(step.escalations)
            if isinstance(rec, EventRecord) and ce is not None:
                self._record_event(batch, result, offset, rec, ce, step)
            result.applied += 1
        batch.states = [self.fold.states[sid] for sid in sorted(changed)]
        last_offset = decoded[-1][0]
        batch.checkpoint = Checkpoint(
            partition=self.partition,
            next_offset=last_offset + 1,
            clock=self.fold.clock,
            head_hash=self.checkpoint.head_hash,  # the store continues the chain from here
        )
        self.store.write(batch)
        self.checkpoint = self.store.load_checkpoint(self.partition)
        result.escalations = batch.escalations
        result.clock = self.fold.clock
        return result

    def _record_event(
        self,
        batch: BatchWrite,
        result: BatchResult,
        offset: int,
        rec: EventRecord,
        ce: dict[str, Any],
        step: Step,
    ) -> None:
        event = rec.event
        if step.duplicate:
            result.duplicates += 1
            return
        at = step.at or rec.at
        batch.applied.append(
            AppliedEvent(
                key=event.key,
                offset=offset,
                submission_id=event.submission_id,
                type=ce["type"],
                time=event.time,
                at=at,
                late=rec.late,
                effective=step.effective,
                note=step.note,
            )
        )
        if step.stance_change is not None:
            sid, voter, stance = step.stance_change
            batch.stances.append((sid, voter, stance, at))
        if isinstance(event, ResponsePosted):
            batch.responses.append((event, at, step.effective))
        state = self.fold.states.get(event.submission_id)
        if state is not None:
            if step.first_response_hours is not None:
                result.first_response_hours.append((state.kind, step.first_response_hours))
            if step.resolution_hours is not None:
                result.resolution_hours.append((state.kind, step.resolution_hours))
            if ce["type"] == "sada.satisfaction.rated" and step.effective:
                result.satisfaction.append((state.unit_id, int(ce["data"]["rating"])))

    def _prefetch(self, records: Iterable[EventRecord | TickRecord]) -> None:
        pairs: set[tuple[str, str]] = set()
        keys: set[str] = set()
        for rec in records:
            if isinstance(rec, EventRecord):
                keys.add(rec.event.key)
                if isinstance(rec.event, VoteCast | VoteRetracted):
                    pairs.add((rec.event.submission_id, rec.event.voter_id))
        known = self.store.stances(pairs)
        self._stances.data = {p: known.get(p) for p in pairs}
        self._ledger.keys = self.store.seen(keys)

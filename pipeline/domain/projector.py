"""Applies batches of one canonical-log partition: order, admit, fold, then one transaction.

For each batch the projector prefetches what it needs (voter stances, keys
already applied or rejected, tracking codes taken), then takes the records in
log order: forwarded events and watermarks go through the partition's
:class:`~sada.pipeline.domain.sequencer.Sequencer`, which releases events in
event-time order; each released event is admitted (a duplicate is absorbed, a
creation must be new, anything else waits for its submission up to the grace)
and folded. Every effect, the rejections, the archive records and the new
checkpoint — with what the sequencer holds — are written in one transaction.
Offsets below the checkpoint are skipped, so a redelivered batch changes
nothing. If a write fails the in-memory state is ahead of the store: the owner
must discard this projector and build a new one from the store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sada.pipeline.domain.fold import EventRecord, PartitionFold, Step, TickRecord
from sada.pipeline.domain.logcodec import decode_raw, dumps, to_domain
from sada.pipeline.domain.model import (
    SUBMISSION_CREATED,
    Escalated,
    FollowChanged,
    ResponsePosted,
    SatisfactionRated,
    Stance,
    SubmissionCreated,
    VoteCast,
    VoteRetracted,
)
from sada.pipeline.domain.notify import (
    AtRisk,
    Decision,
    Follow,
    Missed,
    author_recipient,
    follower_recipient,
    notifications,
)
from sada.pipeline.domain.ports import (
    AppliedEvent,
    BatchWrite,
    Checkpoint,
    ProjectionStore,
    Rejection,
)
from sada.pipeline.domain.reasons import Reason
from sada.pipeline.domain.records import (
    ForwardedEvent,
    InputMark,
    InputRejected,
    OrderedRecord,
    RawRecord,
)
from sada.pipeline.domain.rules import Rules
from sada.pipeline.domain.sequencer import Held, Sequencer


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
    accepted: list[tuple[str, str]] = field(default_factory=list)  # (type, channel) taking effect
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (type, reason)
    late: list[str] = field(default_factory=list)  # types of late events
    held: int = 0  # events the partition holds after the batch
    notifications: int = 0  # written with the batch


@dataclass(slots=True)
class _Waiting:
    held: Held
    late: bool


class Projector:
    def __init__(self, rules: Rules, store: ProjectionStore, partition: int) -> None:
        self.rules = rules
        self.store = store
        self.partition = partition
        checkpoint, states = store.load(partition)
        self.checkpoint = checkpoint
        self._stances = _BatchStances()
        # The batch's keys already applied or rejected, then those it applies: a plain
        # set, refilled by each prefetch.
        self._ledger: set[str] = set()
        self._taken: set[str] = set()  # tracking codes taken elsewhere, refilled likewise
        self.fold = PartitionFold(
            rules, self._stances, self._ledger, states, checkpoint.clock, at_risk=True
        )
        self._codes = {s.tracking_code for s in states}
        self.sequencer = Sequencer(clock=checkpoint.clock)
        self.grace = timedelta(seconds=10)
        self._waiting: dict[str, list[_Waiting]] = {}  # submission id -> events waiting for it
        self._restore(checkpoint.pending)

    @property
    def next_offset(self) -> int:
        return self.checkpoint.next_offset

    @property
    def held(self) -> int:
        return len(self.sequencer) + sum(len(w) for w in self._waiting.values())

    # -- restart ----------------------------------------------------------------------

    def _restore(self, pending: str) -> None:
        if not pending:
            return
        saved = json.loads(pending)
        self.grace = timedelta(seconds=float(saved.get("grace", 10.0)))
        buffered = [int(o) for o in saved.get("held", [])]
        waiting = [(int(o), bool(late)) for o, late in saved.get("waiting", [])]
        raw = self.store.archived(self.partition, buffered + [o for o, _ in waiting])
        self.sequencer.restore(
            saved.get("sequencer", {}), [self._held(o, raw[o]) for o in buffered]
        )
        for offset, late in waiting:
            h = self._held(offset, raw[offset])
            self._waiting.setdefault(h.event.event["data"]["submission_id"], []).append(
                _Waiting(h, late)
            )

    def _held(self, offset: int, raw: bytes) -> Held:
        rec = decode_raw(raw)
        assert isinstance(rec, ForwardedEvent), f"offset {offset} holds no forwarded event"
        return Held(to_domain(rec.event).time, rec.key, offset, rec)

    def _pending(self) -> str:
        if not self.sequencer.marks and not self.held:
            return ""
        return json.dumps(
            {
                "grace": self.grace.total_seconds(),
                "sequencer": self.sequencer.pending(),
                "held": [h.offset for h in self.sequencer.held()],
                "waiting": sorted(
                    [w.held.offset, w.late] for ws in self._waiting.values() for w in ws
                ),
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    # -- a batch ------------------------------------------------------------------------

    def apply_batch(self, records: Sequence[tuple[int, bytes]]) -> BatchResult:
        """Apply ``(offset, record bytes)`` pairs of this partition, in offset order."""
        result = BatchResult()
        start = self.checkpoint.next_offset
        todo = [r for r in records if r[0] >= start]
        result.skipped = len(records) - len(todo)
        if not todo:
            return result
        decoded = [(offset, decode_raw(raw)) for offset, raw in todo]
        self._prefetch(decoded)

        batch = BatchWrite(partition=self.partition, checkpoint=self.checkpoint, archive=todo)
        self._batch, self._result, self._changed = batch, result, set[str]()
        self._decisions: list[Decision] = []
        for offset, rec in decoded:
            self._offset = offset
            self._take(offset, rec)
        self._notify(batch)
        result.applied = len(todo)
        states = self.fold.states
        batch.states = [states[sid] for sid in sorted(self._changed)]
        batch.checkpoint = Checkpoint(
            partition=self.partition,
            next_offset=todo[-1][0] + 1,
            clock=self.fold.clock,
            head_hash=self.checkpoint.head_hash,  # the store continues the chain from here
            pending=self._pending(),
        )
        self.checkpoint = self.store.write(batch)
        result.escalations = batch.escalations
        result.notifications = len(batch.notifications)
        result.clock = self.fold.clock
        result.held = self.held
        return result

    def _take(self, offset: int, rec: RawRecord) -> None:
        if isinstance(rec, ForwardedEvent):
            held = Held(to_domain(rec.event).time, rec.key, offset, rec)
            if self.sequencer.offer(held):
                self._admit(held, late=True)
        elif isinstance(rec, InputMark):
            self.grace = timedelta(seconds=rec.grace)
            self._release(self.sequencer.mark(rec))
            self._tick()
        elif isinstance(rec, InputRejected):
            if rec.key in self._ledger:
                self._result.duplicates += 1
            else:
                self._reject(rec.key, offset, rec.src, rec.type, rec.reason, rec.detail, rec.value)
        elif isinstance(rec.record, TickRecord):
            # An ordered tick (replay to an instant): the buffer goes first, then deadlines.
            self._release(self.sequencer.advance(rec.record.at))
            self._tick(rec.record.at)
        else:
            assert rec.event is not None
            self._fold(
                offset,
                rec.record,
                rec.event["type"],
                str(rec.event["data"].get("channel", "")),
                rec.event,
            )

    def _release(self, released: list[Held]) -> None:
        """Admit what the clock released, in order; a wait that ran out before an event's
        time is rejected before that event is admitted, so the outcome follows event
        time, not how far each watermark moved the clock."""
        for held in released:
            self._expire(held.time)
            self._admit(held, late=False)

    def _tick(self, at: datetime | None = None) -> None:
        """Fire what the clock passed: waits that ran out, then deadlines before the clock."""
        clock = at or self.sequencer.clock
        if clock is None:
            return
        self._expire(clock, final=True)
        if self.fold.clock is None or clock > self.fold.clock:
            self._fold(None, TickRecord(clock), None, "")

    def _admit(self, held: Held, late: bool) -> None:
        ce = held.event.event
        data = ce["data"]
        sid = data["submission_id"]
        key = held.key
        at = self.sequencer.clock if late else held.time
        assert at is not None
        record = EventRecord(to_domain(ce, held.time), at, late)
        if key in self._ledger:
            self._fold(held.offset, record, ce["type"], "")  # absorbed as a duplicate
            return
        if ce["type"] == SUBMISSION_CREATED:
            code = data["tracking_code"]
            if sid in self.fold.states:
                self._reject_held(held, Reason.DUPLICATE_SUBMISSION, f"submission {sid!r} exists")
                return
            if code in self._codes or code in self._taken:
                self._reject_held(
                    held, Reason.DUPLICATE_TRACKING_CODE, f"tracking code {code} is taken"
                )
                return
            self._codes.add(code)
            self._fold(held.offset, record, ce["type"], str(data.get("channel", "")), ce)
            # What waited for the submission follows it, in event-time order.
            for w in sorted(self._waiting.pop(sid, []), key=lambda w: (w.held.time, w.held.key)):
                self._admit(w.held, w.late)
            return
        if sid not in self.fold.states:
            waits = self._waiting.setdefault(sid, [])
            if any(w.held.key == key for w in waits):
                self._result.duplicates += 1  # a redelivery of one already waiting
                return
            waits.append(_Waiting(held, late))
            return
        self._fold(held.offset, record, ce["type"], "", ce)

    def _expire(self, clock: datetime, final: bool = False) -> None:
        """Events whose submission has not come within the grace (in event time) are rejected.

        In ``event`` mode with every input idle nothing more is coming, so they
        are rejected at once.
        """
        if not self._waiting:
            return
        everything = final and self.sequencer.mode == "event" and self.sequencer.all_idle
        grace = self.grace
        for sid in sorted(self._waiting):
            waits = self._waiting[sid]
            due = [w for w in waits if everything or w.held.time + grace < clock]
            if not due:
                continue
            for w in sorted(due, key=lambda w: (w.held.time, w.held.key)):
                if w.held.key in self._ledger:
                    self._result.duplicates += 1  # decided already (a copy came another way)
                    continue
                self._reject_held(
                    w.held,
                    Reason.UNKNOWN_SUBMISSION,
                    f"no submission {sid!r} arrived within {grace.total_seconds():g}s",
                )
            rest = [w for w in waits if w not in due]
            if rest:
                self._waiting[sid] = rest
            else:
                del self._waiting[sid]

    def _reject_held(self, held: Held, reason: str, detail: str) -> None:
        fe = held.event
        self._reject(
            held.key, held.offset, fe.src, fe.event["type"], reason, detail, dumps(fe.event)
        )

    def _reject(
        self,
        key: str,
        offset: int,
        src: tuple[str, int, int],
        type_: str,
        reason: str,
        detail: str,
        value: bytes | None,
    ) -> None:
        self._ledger.add(key)
        self._batch.rejections.append(
            Rejection(key, offset, src, type_, str(reason), detail, value, self.sequencer.clock)
        )
        self._result.rejected.append((type_, str(reason)))

    def _fold(
        self,
        offset: int | None,
        rec: EventRecord | TickRecord,
        type_: str | None,
        channel: str,
        ce: Mapping[str, object] | None = None,
    ) -> None:
        step = self.fold.apply(rec)
        if step.changed:
            self._changed |= step.changed
        if step.escalations:
            self._batch.escalations.extend(step.escalations)
        self._note_decisions(step, ce)
        if type_ is not None and offset is not None:
            self._record_event(self._batch, self._result, offset, rec, type_, step)
            if not step.duplicate:
                self._result.accepted.append((type_, channel))
                if isinstance(rec, EventRecord) and rec.late:
                    self._result.late.append(type_)

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

    def _note_decisions(self, step: Step, ce: Mapping[str, object] | None) -> None:
        """The step's follow changes and decisions to tell of, in order: deadlines fired
        before the event, the event's follow change, then what the event decided."""
        batch, decisions, offset = self._batch, self._decisions, self._offset
        event, at = step.event, step.at
        if step.escalations or step.missed or step.at_risk:
            # Deadlines fired in (instant, submission) order; so are their decisions.
            fired: list[tuple[datetime, str, Escalated | Missed | AtRisk]] = [
                (e.time, e.submission_id, e) for e in step.escalations if at is None or e.time < at
            ]
            fired += [(m[3], m[0], Missed(*m)) for m in step.missed]
            fired += [(r[0], r[1], AtRisk(r[1], r[3], r[2], r[4], r[0])) for r in step.at_risk]
            fired.sort(key=lambda f: (f[0], f[1]))
            decisions.extend(Decision(offset, len(batch.follows), f[2]) for f in fired)
        if event is None or step.duplicate:
            return
        # A person is reached through the integrator that carried their latest follow change.
        via = str(ce.get("source", "")) or None if ce is not None else None
        if step.stance_change is not None:
            sid, voter, stance = step.stance_change
            batch.follows.append(Follow(sid, follower_recipient(voter), via, stance == "support"))
        elif isinstance(event, FollowChanged) and step.effective:
            batch.follows.append(
                Follow(event.submission_id, follower_recipient(event.follower_id), via, event.on)
            )
        elif isinstance(event, SubmissionCreated) and step.effective and ce is not None:
            data = ce.get("data")
            author = data.get("author") if isinstance(data, dict) else None
            if isinstance(author, dict) and isinstance(author.get("id"), str):
                batch.follows.append(
                    Follow(
                        event.submission_id,
                        author_recipient(author["id"]),
                        str(ce.get("source", "")),
                        True,
                    )
                )
        for esc in step.escalations:
            if at is not None and esc.time >= at:
                decisions.append(Decision(offset, len(batch.follows), esc))
        if isinstance(event, ResponsePosted) and step.effective and at is not None:
            decisions.append(Decision(offset, len(batch.follows), (event, at)))

    def _notify(self, batch: BatchWrite) -> None:
        """The batch's notifications: each decision's audience as it was when decided."""
        if self._decisions:
            stored = self.store.followers({d.submission_id for d in self._decisions})
            batch.notifications = notifications(
                self._decisions, batch.follows, stored, self.rules.monitoring
            )

    def _prefetch(self, decoded: Iterable[tuple[int, RawRecord]]) -> None:
        """What this batch may need from the store: of its own records and of those held."""
        pairs: set[tuple[str, str]] = set()
        keys: set[str] = set()
        codes: set[str] = set()

        def note(ce: dict[str, object], key: str) -> None:
            keys.add(key)
            data = ce["data"]
            assert isinstance(data, dict)
            t = ce["type"]
            if t in ("sada.vote.cast", "sada.vote.retracted"):
                pairs.add((data["submission_id"], data["voter_id"]))
            elif t == SUBMISSION_CREATED:
                codes.add(data["tracking_code"])

        for _offset, rec in decoded:
            if isinstance(rec, ForwardedEvent):
                note(rec.event, rec.key)
            elif isinstance(rec, InputRejected):
                keys.add(rec.key)
            elif isinstance(rec, OrderedRecord) and isinstance(rec.record, EventRecord):
                event = rec.record.event
                keys.add(event.key)
                if isinstance(event, VoteCast | VoteRetracted):
                    pairs.add((event.submission_id, event.voter_id))
        for held in self.sequencer.held():
            note(held.event.event, held.key)
        for waits in self._waiting.values():
            for w in waits:
                note(w.held.event.event, w.held.key)
        known = self.store.stances(pairs)
        self._stances.data = {p: known.get(p) for p in pairs}
        self._ledger.clear()
        self._ledger.update(self.store.seen(keys))
        self._taken = self.store.taken_tracking_codes(codes - self._codes) if codes else set()

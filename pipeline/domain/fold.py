"""The fold of one canonical-log partition: records in order in, decisions out.

A partition's records arrive in log order: events (with the effective instant
ingress gave them) and ticks (the pipeline clock moving with no event). The
fold keeps the partition clock, the states of the submissions that live in
the partition and an index of their next deadlines. Before anything takes
effect at instant ``t``, every deadline strictly before ``t`` fires, in order
of (deadline, submission id), so the output is a pure function of the log.

Voter stances and the ledger of applied event keys live behind two small
ports, so the same fold runs over dicts (tests, replay) or a database.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from sada.pipeline.domain import decide
from sada.pipeline.domain.model import (
    DomainEvent,
    Escalated,
    ResponsePosted,
    Stance,
    SubmissionState,
    VoteCast,
    VoteRetracted,
)
from sada.pipeline.domain.rules import Rules
from sada.pipeline.domain.sla import AtRiskMark, at_risk_marks, still_at_risk

_EPSILON = timedelta(microseconds=1)
_VOTES = (VoteCast, VoteRetracted)
_MIN_COMPACT = 64  # stale deadline entries tolerated before compacting, at the least


@dataclass(frozen=True, slots=True)
class EventRecord:
    event: DomainEvent
    at: datetime  # effective instant, decided by ingress: the event time, or later if late
    late: bool = False


@dataclass(frozen=True, slots=True)
class TickRecord:
    at: datetime


LogRecord = EventRecord | TickRecord


class StanceStore(Protocol):
    def get(self, submission_id: str, voter_id: str) -> Stance | None: ...

    def set(self, submission_id: str, voter_id: str, stance: Stance | None) -> None: ...


class Ledger(Protocol):
    """The keys of events already applied: what makes redelivery change nothing."""

    def __contains__(self, key: object) -> bool: ...

    def add(self, key: str) -> None: ...


class DictStances:
    """Stances in a dict: for tests, replay and benchmarks of the pure fold."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], Stance] = {}

    def get(self, submission_id: str, voter_id: str) -> Stance | None:
        return self.data.get((submission_id, voter_id))

    def set(self, submission_id: str, voter_id: str, stance: Stance | None) -> None:
        if stance is None:
            self.data.pop((submission_id, voter_id), None)
        else:
            self.data[(submission_id, voter_id)] = stance


@dataclass(slots=True)
class Step:
    """What applying one record did."""

    escalations: list[Escalated] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)  # submission ids whose state changed
    event: DomainEvent | None = None
    at: datetime | None = None
    duplicate: bool = False
    effective: bool = False
    note: str = ""
    stance_change: tuple[str, str, Stance | None] | None = None  # (submission, voter, stance)
    # Deadlines missed where nothing moves (at the root): (submission, unit, clock, deadline)
    missed: list[tuple[str, str, str, datetime]] = field(default_factory=list)
    # Clocks that became at risk, in instant order: (instant, submission, clock, unit, deadline)
    at_risk: list[AtRiskMark] = field(default_factory=list)
    first_response_hours: float | None = None  # business hours, arrival -> first response
    resolution_hours: float | None = None  # business hours, creation -> closure


class PartitionFold:
    def __init__(
        self,
        rules: Rules,
        stances: StanceStore,
        ledger: Ledger,
        states: Iterable[SubmissionState] = (),
        clock: datetime | None = None,
        at_risk: bool = False,
    ) -> None:
        self.rules = rules
        self.stances = stances
        self.ledger = ledger
        self.states: dict[str, SubmissionState] = {s.submission_id: s for s in states}
        self.clock = clock
        # Deadline index: (due, submission id), lazily deleted. A moved or stopped
        # deadline leaves its old entry behind (skipped when it comes up);
        # _compact drops those once they are a quarter of the index.
        self._heap: list[tuple[datetime, str]] = []
        self._compact_at = _MIN_COMPACT
        # At-risk index (only when asked for: it costs two calendar sums per arrival): the
        # instants clocks become at risk at, lazily deleted like the deadlines. After each
        # record none is left at or before the clock, so a fold resumed at ``clock`` needs
        # only those after it: the others were taken when the clock reached them.
        self._risk: list[AtRiskMark] | None = [] if at_risk else None
        for s in self.states.values():
            self._schedule(s)
            if self._risk is not None:
                self._risk.extend(
                    m for m in at_risk_marks(s, rules) if clock is None or m[0] > clock
                )
        if self._risk:
            heapq.heapify(self._risk)

    def apply(self, record: LogRecord) -> Step:
        step = Step()
        clock = self.clock
        at = record.at if clock is None or record.at > clock else clock
        heap, risk = self._heap, self._risk
        if (heap and heap[0][0] < at) or (risk and risk[0][0] <= at):
            self._fire_before(at, step)
        self.clock = at
        if isinstance(record, TickRecord):
            return step
        event = record.event
        step.event = event
        step.at = at
        key = event.key
        ledger = self.ledger
        if key in ledger:
            step.duplicate = True
            return step
        ledger.add(key)
        sid = event.submission_id
        state = self.states.get(sid)
        voter: str | None = None
        prev: Stance | None = None
        if isinstance(event, _VOTES):
            voter = event.voter_id
            prev = self.stances.get(sid, voter)
        decision = decide.apply(state, event, at, self.rules, prev)
        step.effective = decision.effective
        step.note = decision.note
        if decision.stance_changed and voter is not None:
            self.stances.set(sid, voter, decision.stance)
            step.stance_change = (sid, voter, decision.stance)
        new = decision.state
        if new is not None and new is not state:
            if state is not None and isinstance(event, ResponsePosted):
                self._measure(state, new, at, step)
            self.states[new.submission_id] = new
            step.changed.add(new.submission_id)
            if state is None or decide.next_due(new) != decide.next_due(state):
                self._schedule(new)
            self._schedule_risk(state, new)
        if decision.escalations:
            step.escalations.extend(decision.escalations)
        return step

    def _measure(
        self, old: SubmissionState, new: SubmissionState, at: datetime, step: Step
    ) -> None:
        cal = self.rules.calendar
        if old.first_response_due is not None and (
            new.first_response_due is None or new.unit_id != old.unit_id
        ):
            step.first_response_hours = cal.business_hours_between(old.arrived_at, at)
        if new.status == "closed" and old.status == "open":
            step.resolution_hours = cal.business_hours_between(old.created_at, at)

    def _schedule(self, state: SubmissionState) -> None:
        due = decide.next_due(state)
        if due is not None:
            heapq.heappush(self._heap, (due, state.submission_id))
            if len(self._heap) > self._compact_at:
                self._compact()

    def _schedule_risk(self, old: SubmissionState | None, new: SubmissionState) -> None:
        """A submission that arrived somewhere (created, referred, escalated) runs new clocks."""
        risk = self._risk
        if risk is None:
            return
        if old is None or new.arrived_at != old.arrived_at or new.unit_id != old.unit_id:
            for mark in at_risk_marks(new, self.rules):
                heapq.heappush(risk, mark)

    def _compact(self) -> None:
        """Rebuild the deadline index from its live entries, one per submission.

        Dropping stale entries changes nothing that fires: they would be skipped,
        and of two live entries for one deadline the second finds it fired.
        """
        states = self.states
        live: dict[str, tuple[datetime, str]] = {}
        for entry in self._heap:
            state = states.get(entry[1])
            if state is not None and decide.next_due(state) == entry[0]:
                live[entry[1]] = entry
        self._heap[:] = live.values()  # in place: _fire_before holds the list
        heapq.heapify(self._heap)
        self._compact_at = len(self._heap) + max(len(self._heap) // 4, _MIN_COMPACT)

    def _fire_before(self, until: datetime, step: Step) -> None:
        heap, risk = self._heap, self._risk
        while True:
            deadline = heap[0][0] if heap and heap[0][0] < until else None
            # A clock is at risk from its instant on (sla_status), a deadline passes after its
            # instant; on a tie the at-risk mark goes first.
            if risk and risk[0][0] <= until and (deadline is None or risk[0][0] <= deadline):
                self._take_risk(heapq.heappop(risk), step)
                continue
            if deadline is None:
                return
            due, sid = heapq.heappop(heap)
            state = self.states.get(sid)
            if state is None or decide.next_due(state) != due:
                continue  # stale entry: the deadline moved or stopped
            new, escalations = decide.advance(state, due + _EPSILON, self.rules)
            self.states[sid] = new
            step.changed.add(sid)
            step.escalations.extend(escalations)
            # Overdue flags are only ever set where nothing moves: newly set is newly missed.
            if new.first_response_overdue and not state.first_response_overdue:
                step.missed.append((sid, new.unit_id, "first_response", due))
            if new.resolution_overdue and not state.resolution_overdue:
                step.missed.append((sid, new.unit_id, "resolution", due))
            self._schedule(new)
            self._schedule_risk(state, new)

    def _take_risk(self, mark: AtRiskMark, step: Step) -> None:
        # Two arrivals at one instant may leave equal marks: the second is no news.
        if still_at_risk(self.states.get(mark[1]), mark) and (
            not step.at_risk or step.at_risk[-1] != mark
        ):
            step.at_risk.append(mark)

    def deadline_entries(self) -> int:
        """Entries in the deadline index, stale ones included: what it holds in memory."""
        return len(self._heap)

    def pending_deadlines(self) -> int:
        return sum(1 for s in self.states.values() if decide.next_due(s) is not None)

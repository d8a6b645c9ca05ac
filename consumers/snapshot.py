"""The operations view of the read model: SLA status at the pipeline clock, and the units' ranking.

:func:`build_snapshot` reads the state-derived gauges of ``/metrics`` from the
store; :class:`SnapshotSource` caches it for a couple of seconds so scrapes
stay cheap; :func:`snapshot_source` wires one to a running worker.
:func:`unit_ranking` ranks units on their first responses, as the campaign in
seed 004 ranked its offices.

Time is the pipeline clock (event time), never the wall clock, so a replay of
the same history shows the same numbers. The SLA status of an open submission
is the domain's rule, :mod:`sada.pipeline.domain.sla`; the store evaluates it
in SQL (:meth:`~sada.consumers.store.SqlStore.sla_counts`) from the at-risk
cutoffs computed here, one per kind and clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sada.consumers.store import SqlStore
from sada.infra import topics
from sada.infra.metrics import Snapshot
from sada.pipeline.domain.config import Config
from sada.pipeline.domain.ports import PipelineView
from sada.pipeline.domain.rules import Rules
from sada.pipeline.domain.sla import at_risk_cutoff

OVERDUE_REASONS = frozenset({"first_response_overdue", "resolution_overdue"})

Lag = Mapping[tuple[str, str], int]


def latest_clock(store: SqlStore) -> datetime | None:
    """The furthest pipeline clock the store has applied (its partitions' checkpoints)."""
    clocks = [c.clock for c in store.checkpoints() if c.clock is not None]
    return max(clocks) if clocks else None


def build_snapshot(
    store: SqlStore,
    rules: Rules,
    clock: datetime | None,
    lag: Lag | None = None,
    *,
    worker_up: Mapping[str, bool] | None = None,
) -> Snapshot:
    """The state-derived gauges at pipeline clock ``clock``.

    ``None`` for ``clock`` (a worker that has not started its clock) uses the
    store's own, from its checkpoints; with neither, only overdue flags count.
    """
    if clock is None:
        clock = latest_clock(store)
    cutoffs: dict[str, tuple[datetime | None, datetime | None]] = {}
    if clock is not None:
        for kind, sla in sorted(rules.sla.items()):
            cutoffs[kind] = (
                at_risk_cutoff(rules.calendar, clock, sla.first_response_hours),
                at_risk_cutoff(rules.calendar, clock, sla.resolution_hours),
            )
    open_counts, closed = store.sla_counts(clock, cutoffs)
    at_risk: dict[str, int] = {}
    overdue: dict[str, int] = {}
    for (unit, _kind, status), n in open_counts.items():
        if status == "at_risk":
            at_risk[unit] = at_risk.get(unit, 0) + n
        elif status == "overdue":
            overdue[unit] = overdue.get(unit, 0) + n
    return Snapshot(
        open_submissions=open_counts,
        at_risk=at_risk,
        overdue=overdue,
        closed_submissions=closed,
        pipeline_clock_seconds=None if clock is None else clock.timestamp(),
        consumer_lag=dict(lag or {}),
        worker_up=dict(worker_up or {}),
    )


class SnapshotSource:
    """A :data:`~sada.infra.metrics.SnapshotSource` that reads the store at most once per ``ttl``.

    Safe to call from several threads (each scrape runs in one); concurrent
    callers share one read. A failed read is not cached: it raises, and the
    metrics collector counts it.
    """

    def __init__(
        self,
        store: SqlStore,
        rules: Rules,
        clock: Callable[[], datetime | None],
        lag: Callable[[], Lag] | None = None,
        worker_up: Callable[[], Mapping[str, bool]] | None = None,
        *,
        ttl: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.rules = rules
        self._clock = clock
        self._lag = lag
        self._worker_up = worker_up
        self.ttl = ttl
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._cached: Snapshot | None = None
        self._taken = 0.0

    def __call__(self) -> Snapshot:
        with self._lock:
            now = self._monotonic()
            if self._cached is not None and now - self._taken < self.ttl:
                return self._cached
            snapshot = build_snapshot(
                self.store,
                self.rules,
                self._clock(),
                self._lag() if self._lag else None,
                worker_up=self._worker_up() if self._worker_up else None,
            )
            self._cached, self._taken = snapshot, now
            return snapshot


class _ProjectorLag:
    """The projector's lag, asked of the worker's event loop from a scrape thread.

    On the loop's own thread (where waiting for the loop would deadlock) or
    when the loop cannot answer, the last value read stands.
    """

    def __init__(self, view: PipelineView, loop: asyncio.AbstractEventLoop | None) -> None:
        self.view = view
        self.loop = loop
        self.last: dict[tuple[str, str], int] = {}

    def __call__(self) -> Lag:
        loop = self.loop
        if loop is None or loop.is_closed():
            return self.last
        with contextlib.suppress(RuntimeError):
            if asyncio.get_running_loop() is loop:
                return self.last
        future = asyncio.run_coroutine_threadsafe(self.view.lag(), loop)
        try:
            behind = future.result(timeout=2)
        except Exception:
            future.cancel()
            return self.last
        self.last = {("projector", topics.LOG): int(behind)}
        return self.last


def snapshot_source(
    store: SqlStore,
    config: Config,
    view: PipelineView,
    loop: asyncio.AbstractEventLoop | None = None,
    *,
    ttl: float = 2.0,
) -> SnapshotSource:
    """The snapshot source of a running worker: its store, its pipeline clock, its stages.

    ``loop`` is the worker's event loop, needed to read the projector's lag
    from a scrape thread; without it no lag is exported. A stage reads as up
    while it runs and the worker has no failure (a failure in either stage
    stops ``sada run``).
    """
    rules = Rules.from_config(config)  # its own calendar: not shared across threads
    return SnapshotSource(
        store, rules, view.clock, _ProjectorLag(view, loop), view.stages_up, ttl=ttl
    )


# -- the units' ranking ---------------------------------------------------------------


@dataclass(slots=True)
class _Visit:
    """One stay of a submission at a unit: from its arrival until it moved on (or now)."""

    unit: str
    start: datetime
    left_for: str | None = None  # why it moved on: an escalation reason, or "referral"
    first_response: datetime | None = None


@dataclass(frozen=True, slots=True)
class _Move:
    time: datetime
    order: tuple[int, int]  # ties at one instant: referrals by log offset, escalations by level
    from_unit: str
    to_unit: str
    reason: str


@dataclass(slots=True)
class _UnitTally:
    received: int = 0
    in_time: int = 0
    late: int = 0
    hours: list[float] = field(default_factory=list)
    ratings: list[int] = field(default_factory=list)
    escalations_away: int = 0
    overdue_escalations_away: int = 0


def _walk(origin: str, created_at: datetime, moves: Sequence[_Move]) -> list[_Visit]:
    """The stays of one submission, following each move from the unit that held it."""
    visits = [_Visit(origin, created_at)]
    pending = sorted(moves, key=lambda m: (m.time, m.order))
    unit = origin
    while pending:
        i = next((i for i, m in enumerate(pending) if m.from_unit == unit), None)
        if i is None:
            break  # not a chain from the origin: keep what is certain
        move = pending.pop(i)
        visits[-1].left_for = move.reason
        visits.append(_Visit(move.to_unit, move.time))
        unit = move.to_unit
    return visits


def stays(history: Mapping[str, Sequence[Any]]) -> Iterator[tuple[Any, list[_Visit]]]:
    """Each submission of ``history`` with its stays at units, first responses marked.

    A submission moves by escalation or referral; each stay begins at its
    arrival and has the first response the unit gave during it (a response is
    effective only from the unit holding the submission).
    """
    origins: dict[str, str] = {row.submission_id: row.unit_id for row in history["origins"]}
    moves: dict[str, list[_Move]] = {}
    for e in history["escalations"]:
        moves.setdefault(e.submission_id, []).append(
            _Move(e.time, (1, int(e.to_level)), e.from_unit_id, e.to_unit_id, e.reason)
        )
    responses: dict[str, list[Any]] = {}
    for r in history["responses"]:
        responses.setdefault(r.submission_id, []).append(r)
        target = r.referred_to_unit_id
        if r.kind == "referral" and target and target != r.unit_id:
            offset = -1 if r.offset is None else int(r.offset)
            moves.setdefault(r.submission_id, []).append(
                _Move(r.at, (0, offset), r.unit_id, target, "referral")
            )
    for s in history["submissions"]:
        sid = s.submission_id
        own_moves = moves.get(sid, [])
        origin = origins.get(sid) or (
            min(own_moves, key=lambda m: (m.time, m.order)).from_unit if own_moves else s.unit_id
        )
        visits = _walk(origin, s.created_at, own_moves)
        for r in responses.get(sid, []):
            # The unit's latest stay that had begun by then.
            for v in reversed(visits):
                if v.unit == r.unit_id and v.start <= r.at:
                    if v.first_response is None:
                        v.first_response = r.at
                    break
        yield s, visits


def first_response_hours(
    history: Mapping[str, Sequence[Any]], rules: Rules
) -> dict[str, list[float]]:
    """Business hours from each arrival at a unit to the unit's first response, by kind.

    ``sada_first_response_business_hours`` read from the store, so it
    survives a restart. Stays that ended unanswered (escalated away, or still
    waiting) have no first response and are not counted. (The projector's
    histogram also observes a stay that a vote escalated away unanswered.)
    """
    out: dict[str, list[float]] = {}
    cal = rules.calendar
    for s, visits in stays(history):
        for v in visits:
            if v.first_response is not None:
                hours = cal.business_hours_between(v.start, v.first_response)
                out.setdefault(s.kind, []).append(hours)
    return out


def unit_ranking(
    store: SqlStore,
    rules: Rules,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict[str, Any]]:
    """:func:`rank_units` over the store's whole history (one read of it)."""
    return rank_units(store.unit_history(), rules, since, until)


def rank_units(
    history: Mapping[str, Sequence[Any]],
    rules: Rules,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict[str, Any]]:
    """Units ranked on answering in time, best first; one dict per unit that received anything.

    ``history`` is :meth:`~sada.consumers.store.SqlStore.unit_history`'s.
    With ``since`` / ``until``, only visits that began in ``[since, until)``
    count, escalations away that happened then, and ratings of submissions
    created then: the ranking of a period (a report's week or month).

    A *visit* is one stay of a submission at a unit: from its creation there,
    or its arrival by escalation or referral, until it moved on. Per unit:

    - ``received``: visits (submissions that arrived at the unit);
    - ``first_responses_in_time``: visits whose first response from the unit
      (acknowledgement, answer, referral, resolution or rejection) came at or
      before the visit's first-response deadline (SLA hours of its kind from
      the arrival, in business time);
    - ``first_responses_late``: visits whose first response came after that
      deadline (possible only at the root, where an overdue submission stays),
      visits that left by a ``first_response_overdue`` escalation, and visits
      still at the unit with their first-response deadline marked passed;
      visits still waiting within their deadline, or that left before it
      unanswered (support escalation), count in neither;
    - ``in_time_ratio``: in time / (in time + late), ``None`` when both are 0;
    - ``median_first_response_hours``: median business hours from arrival to
      first response, over visits with a response (``None`` without any);
    - ``satisfaction_mean`` over ``ratings``: the latest rating of each
      submission, counted for the unit holding it (the one that closed it);
    - ``escalations_away``: escalations from the unit, of any reason;
      ``overdue_escalations_away``: those for a missed deadline.

    Ranked by in-time ratio (highest first), then median time to first
    response (shortest first), then unit id; units without a ratio or a median
    come after those with one. ``position`` counts from 1.
    """

    def within(t: datetime) -> bool:
        return (since is None or t >= since) and (until is None or t < until)

    tallies: dict[str, _UnitTally] = {}

    def tally(unit: str) -> _UnitTally:
        found = tallies.get(unit)
        if found is None:
            found = tallies[unit] = _UnitTally()
        return found

    for e in history["escalations"]:
        if not within(e.time):
            continue
        away = tally(e.from_unit_id)
        away.escalations_away += 1
        if e.reason in OVERDUE_REASONS:
            away.overdue_escalations_away += 1

    for s, visits in stays(history):
        sla = rules.sla.get(s.kind)
        for i, v in enumerate(visits):
            if not within(v.start):
                continue
            t = tally(v.unit)
            t.received += 1
            if v.first_response is not None:
                t.hours.append(rules.calendar.business_hours_between(v.start, v.first_response))
                if sla is not None:
                    due = rules.calendar.add_business_hours(v.start, sla.first_response_hours)
                    if v.first_response <= due:
                        t.in_time += 1
                    else:
                        t.late += 1
            elif v.left_for == "first_response_overdue" or (
                i == len(visits) - 1
                and s.status == "open"
                and v.unit == s.unit_id
                and bool(s.first_response_overdue)
            ):
                t.late += 1
        if s.satisfaction is not None and within(s.created_at):
            tally(s.unit_id).ratings.append(int(s.satisfaction))

    rows: list[dict[str, Any]] = []
    for unit, t in tallies.items():
        if t.received == 0:
            continue
        decided = t.in_time + t.late
        rows.append(
            {
                "unit_id": unit,
                "received": t.received,
                "first_responses_in_time": t.in_time,
                "first_responses_late": t.late,
                "in_time_ratio": t.in_time / decided if decided else None,
                "median_first_response_hours": statistics.median(t.hours) if t.hours else None,
                "satisfaction_mean": statistics.fmean(t.ratings) if t.ratings else None,
                "ratings": len(t.ratings),
                "escalations_away": t.escalations_away,
                "overdue_escalations_away": t.overdue_escalations_away,
            }
        )
    rows.sort(
        key=lambda row: (
            row["in_time_ratio"] is None,
            -(row["in_time_ratio"] or 0.0),
            row["median_first_response_hours"] is None,
            row["median_first_response_hours"] or 0.0,
            row["unit_id"],
        )
    )
    for position, row in enumerate(rows, start=1):
        row["position"] = position
    return rows

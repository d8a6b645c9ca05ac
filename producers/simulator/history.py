"""The simulated history: :func:`simulate`, each submission's planned life, in event-time order."""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sada.pipeline.domain.config import Config
from sada.pipeline.domain.errors import SadaError
from sada.producers.simulator.submission import Step, Tracker
from sada.producers.simulator.world import (
    DEFAULT_SOURCE_PREFIX,
    PEOPLE,
    World,
    hours,
    person,
    weighted,
)

# Support by popularity rank r: SCALE * r ** -EXPONENT, times a little noise;
# SCALE grows with the square root of the number of submissions (a larger
# community votes more), from _ZIPF_SCALE at _ZIPF_SIZE submissions.
_ZIPF_SCALE = 450.0
_ZIPF_SIZE = 200
_ZIPF_EXPONENT = 1.05
# The most popular submissions are placed in the first part of the window, so
# that they have time to gather their support before it ends.
_VIRAL_EARLY = 0.6

_NEGLECTED = 0.12  # share of submissions no unit ever answers
_WITHDRAWN = 0.04
_REVOTE = 0.06
_RETRACT = 0.04

# Relative activity by local hour of day: quiet nights, busy office hours,
# a second peak in the evening when people write from their phones.
_HOURLY = (
    0.15, 0.08, 0.05, 0.04, 0.04, 0.08, 0.2, 0.45, 0.8, 1.0, 1.0, 0.95,
    0.85, 0.9, 0.9, 0.8, 0.7, 0.6, 0.6, 0.7, 0.8, 0.75, 0.55, 0.3,
)  # fmt: skip
_WEEKEND = 0.55  # activity on non-working weekdays, relative


def simulate(
    config: Config,
    *,
    seed: int,
    submissions: int,
    start: datetime,
    days: float,
    source_prefix: str = DEFAULT_SOURCE_PREFIX,
) -> Iterator[dict[str, Any]]:
    """``submissions`` submissions created in ``[start, start + days)``, and their lives, in order.

    Events after the end of the window are left out, so the history is cut
    at one instant: everything before it is there, nothing after it. Ties in
    time keep the order in which submissions were created.
    """
    return Simulation(config, seed, submissions, start, days, source_prefix).events()


@dataclass(order=True)
class _Pending:
    at: datetime
    seq: int
    action: str = field(compare=False)
    voter: str = field(default="", compare=False)
    stance: str | None = field(default=None, compare=False)
    rating: int = field(default=0, compare=False)


class _Lifecycle:
    """The planned life of one submission, played in event-time order."""

    def __init__(self, tracker: Tracker, supporters: int) -> None:
        self.t = tracker
        self.rng = tracker.rng
        self.world = tracker.world
        self.neglected = self.rng.random() < _NEGLECTED
        self._seq = itertools.count()
        self.pending: list[_Pending] = []
        self._plan_votes(supporters)
        if self.rng.random() < _WITHDRAWN:
            self._push(
                tracker.created_at + hours(self.rng.lognormvariate(math.log(20), 1.0)), "withdraw"
            )

    def events(self) -> Iterator[tuple[datetime, dict[str, Any]]]:
        t, world = self.t, self.world
        created = t.create()
        yield t.created_at, created
        plan = self._plan_unit("created")
        while True:
            assert t.state is not None
            nxt = self.pending[0].at if self.pending else None
            if plan and (nxt is None or plan[0].at <= nxt):
                nxt = plan[0].at
            # A deadline before the next action moves the submission first;
            # the unit it reaches then decides for itself.
            if t.advance_one(min(nxt, world.end) if nxt is not None else world.end):
                plan = self._plan_unit("overdue")
                continue
            if nxt is None or nxt > world.end:
                return
            if plan and plan[0].at == nxt:
                step = plan.pop(0)
                if not t.is_open:
                    plan = []
                    continue
                yield step.at, t.respond(step.at, step.kind, step.referred_to)
                if step.kind == "referral":
                    plan = self._plan_unit("referral")
                elif step.kind != "acknowledgement":
                    plan = []
                    self._plan_rating(step.kind)
                continue
            p = heapq.heappop(self.pending)
            if p.action == "vote":
                if t.state.status == "withdrawn":
                    continue
                level = t.state.level
                yield p.at, t.vote(p.at, p.voter, p.stance)
                if t.state.level > level:  # support moved it up: a new unit, a new plan
                    plan = self._plan_unit("support")
            elif p.action == "withdraw":
                if t.is_open:
                    yield p.at, t.withdraw(p.at)
                    plan = []
            elif p.action == "rate":
                yield p.at, t.rate(p.at, p.rating)

    def _push(
        self, at: datetime, action: str, voter: str = "", stance: str | None = None, rating: int = 0
    ) -> None:
        heapq.heappush(self.pending, _Pending(at, next(self._seq), action, voter, stance, rating))

    def _plan_votes(self, supporters: int) -> None:
        rng, t0 = self.rng, self.t.created_at
        opposers = round(supporters * rng.uniform(0.03, 0.25))
        if supporters < 5 and rng.random() < 0.2:
            opposers += 1
        voters = rng.sample(range(PEOPLE), supporters + opposers)
        # Attention decays from creation; a popular one draws its crowd in a burst.
        median = rng.uniform(2, 18) if supporters >= 30 else rng.uniform(4, 48)
        sigma = 0.9 if supporters >= 30 else 1.2
        for i, n in enumerate(voters):
            voter = person(n)
            stance = "support" if i < supporters else "oppose"
            at = t0 + hours(rng.lognormvariate(math.log(median), sigma)) + timedelta(seconds=45)
            self._push(at, "vote", voter, stance)
            if rng.random() < _REVOTE:
                at += hours(rng.lognormvariate(math.log(12), 1.0))
                stance = "oppose" if stance == "support" else "support"
                self._push(at, "vote", voter, stance)
            if rng.random() < _RETRACT:
                self._push(at + hours(rng.lognormvariate(math.log(20), 1.0)), "vote", voter)

    def _plan_unit(self, cause: str) -> list[Step]:
        """What the unit now holding the submission will do, in business time from its arrival."""
        t, rng, world = self.t, self.rng, self.world
        state = t.state
        assert state is not None
        if self.neglected or state.status != "open":
            return []
        silent = {"created": 0.0, "overdue": 0.3, "support": 0.05, "referral": 0.1}[cause]
        if rng.random() < silent:
            return []
        sla = world.rules.sla[t.kind]
        cal = world.calendar
        arrival = state.arrived_at
        first_h = max(0.05, rng.lognormvariate(math.log(0.2 * sla.first_response_hours), 1.0))
        first_at = cal.add_business_hours(arrival, first_h) + timedelta(seconds=rng.randrange(60))
        weights = {
            "acknowledgement": 60.0,
            "referral": 12.0 if t.referrals < 2 and len(world.units) > 1 else 0.0,
            "answer": 30.0 if t.kind == "question" else 12.0,
            "resolution": 6.0,
            "rejection": 6.0,
        }
        first = rng.choices(list(weights), list(weights.values()))[0]
        if first == "referral":
            return [Step(first_at, first, world.pick_unit(rng, other_than=state.unit_id))]
        if first != "acknowledgement":
            return [Step(first_at, first)]
        if rng.random() < 0.1:  # acknowledged, then stalled: the resolution clock runs out
            return [Step(first_at, first)]
        close_h = rng.lognormvariate(math.log(0.3 * sla.resolution_hours), 0.6)
        close_h = max(close_h, first_h + 0.25)
        close_at = cal.add_business_hours(arrival, close_h) + timedelta(seconds=rng.randrange(60))
        closing = {
            "complaint": (("resolution", 50), ("answer", 38), ("rejection", 12)),
            "criticism": (("answer", 60), ("resolution", 25), ("rejection", 15)),
            "suggestion": (("answer", 55), ("resolution", 30), ("rejection", 15)),
            "question": (("answer", 85), ("resolution", 10), ("rejection", 5)),
        }[t.kind]
        return [Step(first_at, first), Step(close_at, weighted(rng, closing))]

    def _plan_rating(self, closing: str) -> None:
        rng = self.rng
        if rng.random() < (0.35 if closing == "rejection" else 0.6):
            state = self.t.state
            assert state is not None and state.closed_at is not None
            at = (
                state.closed_at + timedelta(minutes=5) + hours(rng.lognormvariate(math.log(6), 1.2))
            )
            self._push(at, "rate", rating=self.t.rating_for(closing))


class Simulation:
    def __init__(
        self,
        config: Config,
        seed: int,
        submissions: int,
        start: datetime,
        days: float,
        source_prefix: str,
    ) -> None:
        if start.tzinfo is None or start.utcoffset() is None:
            raise SadaError("the start instant needs a time zone")
        if not (math.isfinite(days) and days > 0):
            raise SadaError(f"days must be a positive number, not {days!r}")
        if submissions < 0:
            raise SadaError(f"submissions must be 0 or more, not {submissions}")
        self.start = start.astimezone(UTC)
        self.span = timedelta(days=days)
        self.world = World.build(config, self.start + self.span, source_prefix)
        self.rng = random.Random(seed)
        self.n = submissions
        self.trackers: list[Tracker] = []

    def events(self) -> Iterator[dict[str, Any]]:
        rng = self.rng
        created = self._creation_times()
        supporters = self._supporters(created)
        seeds = [rng.getrandbits(64) for _ in range(self.n)]
        heap: list[tuple[datetime, int, int, dict[str, Any], Iterator[Any]]] = []
        started = 0
        while True:
            while started < self.n and (not heap or created[started] <= heap[0][0]):
                tracker = Tracker(self.world, random.Random(seeds[started]), created[started])
                self.trackers.append(tracker)
                life = _Lifecycle(tracker, supporters[started]).events()
                at, event = next(life)
                heapq.heappush(heap, (at, started, 0, event, life))
                started += 1
            if not heap:
                return
            at, i, k, event, life = heapq.heappop(heap)
            yield event
            following = next(life, None)
            if following is not None:
                heapq.heappush(heap, (following[0], i, k + 1, following[1], life))

    def _creation_times(self) -> list[datetime]:
        """Creation instants, denser in the organisation's waking and working hours."""
        rng, zone, workdays = self.rng, self.world.zone, self.world.config.calendar.workdays
        span_ms = int(self.span / timedelta(milliseconds=1))
        out: list[datetime] = []
        while len(out) < self.n:
            at = self.start + timedelta(milliseconds=rng.randrange(span_ms))
            local = at.astimezone(zone)
            weight = _HOURLY[local.hour] * (1.0 if local.weekday() in workdays else _WEEKEND)
            if rng.random() < weight:
                out.append(at)
        out.sort()
        return out

    def _supporters(self, created: Sequence[datetime]) -> list[int]:
        """Supporters per submission (in creation order): Zipf-like by a random rank."""
        rng, n = self.rng, self.n
        ranks = list(range(1, n + 1))
        rng.shuffle(ranks)
        where = {r: i for i, r in enumerate(ranks)}
        # ``created`` is sorted: the early ones are a prefix.
        early = bisect.bisect_left(created, self.start + self.span * _VIRAL_EARLY)
        top = max(3, n // 50)
        for r in range(1, min(top, n) + 1):
            i = where[r]
            if i >= early and early > 0:
                j = rng.randrange(early)
                if ranks[j] > top:
                    ranks[i], ranks[j] = ranks[j], ranks[i]
                    where[ranks[i]], where[ranks[j]] = i, j
        scale = _ZIPF_SCALE * math.sqrt(n / _ZIPF_SIZE)
        # Everyone gets a few votes from friends and classmates, whatever the rank.
        return [
            int(scale * r**-_ZIPF_EXPONENT * rng.lognormvariate(0, 0.3) + rng.expovariate(0.5))
            for r in ranks
        ]

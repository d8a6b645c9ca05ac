"""Realistic, repeatable Sada traffic: ``sada simulate`` and the feed of ``sada run --demo``.

:func:`simulate` yields complete, validated CloudEvents in event-time order.
Submissions of every kind arrive through every channel, weighted toward the
leaves of the unit tree, with Persian, Russian and English text built from the
seed sentences. Support is heavy-tailed: submissions are ranked at random and
draw supporters Zipf-like by rank, so a few cross the support thresholds while
most get a handful; some voters change their stance, some retract it.

Units respond in business time of the organisation's calendar: each unit a
submission reaches (on creation, referral or escalation) draws its own
behaviour: acknowledgement within hours, answer within days, now and then a
referral, a rejection, a stalled case or silence. A share of submissions is
never answered at all, so deadlines pass and the pipeline escalates them.
Every response comes from the unit that holds the submission at that instant:
the simulator follows each submission with the pipeline's own decision core,
so it knows where escalations have moved it. Closed submissions get
satisfaction ratings; a few are withdrawn.

Everything comes from one ``random.Random(seed)`` and instants derived from
``start``: the same arguments give the same events, byte for byte.

:func:`run_demo` publishes a short backfill of history ending now, then a
live trickle stamped with the wall clock, including one submission that goes
viral within a minute or two.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import itertools
import logging
import math
import random
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sada.infra.settings import Settings
from sada.pipeline.domain import decide
from sada.pipeline.domain.calendar import BusinessCalendar
from sada.pipeline.domain.config import Config, Unit
from sada.pipeline.domain.errors import SadaError
from sada.pipeline.domain.logcodec import dumps, to_domain
from sada.pipeline.domain.model import (
    RESPONSE_POSTED,
    SATISFACTION_RATED,
    SUBMISSION_CREATED,
    SUBMISSION_WITHDRAWN,
    VOTE_CAST,
    VOTE_RETRACTED,
    SubmissionState,
)
from sada.pipeline.domain.rules import Rules
from sada.pipeline.domain.tracking import new_tracking_code
from sada.producers.events import build_event, topic_for
from sada.producers.texts import Composed, TextBank, text_bank

log = logging.getLogger(__name__)

DEFAULT_SOURCE_PREFIX = "/integrations/simulator"

CHANNELS = (
    ("telegram", 28),
    ("web", 25),
    ("whatsapp", 14),
    ("phone", 10),
    ("email", 10),
    ("sms", 8),
    ("in_person", 5),
)
KINDS = (("complaint", 35), ("suggestion", 25), ("question", 25), ("criticism", 15))
LANGUAGES = (("fa", 76), ("ru", 13), ("en", 11))
ROLES: Mapping[str, tuple[tuple[str, int], ...]] = {
    "fa": (("student", 52), ("staff", 15), ("citizen", 14), ("faculty", 10), ("alumni", 6)),
    "ru": (("alumni", 40), ("student", 45), ("faculty", 15)),
    "en": (("student", 50), ("faculty", 25), ("citizen", 15), ("alumni", 10)),
}
_VOTE_CHANNELS = ("web", "telegram", "whatsapp")

# Support by popularity rank r: SCALE * r ** -EXPONENT, times a little noise;
# SCALE grows with the square root of the number of submissions (a larger
# community votes more), from _ZIPF_SCALE at _ZIPF_SIZE submissions.
_ZIPF_SCALE = 450.0
_ZIPF_SIZE = 200
_ZIPF_EXPONENT = 1.05
# The most popular submissions are placed in the first part of the window, so
# that they have time to gather their support before it ends.
_VIRAL_EARLY = 0.6
_PEOPLE = 200_000  # pseudonymous people that author and vote

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
_ONE_US = timedelta(microseconds=1)


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
    return _Simulation(config, seed, submissions, start, days, source_prefix).events()


# -- the world: rules, units, text ---------------------------------------------------------


@dataclass
class _World:
    config: Config
    rules: Rules
    calendar: BusinessCalendar
    zone: ZoneInfo
    texts: TextBank
    source_prefix: str
    end: datetime
    units: tuple[str, ...]
    unit_weights: tuple[float, ...]
    used_codes: set[str] = field(default_factory=set)

    @classmethod
    def build(cls, config: Config, end: datetime, source_prefix: str) -> _World:
        if not config.units:
            raise SadaError("the configuration has no units to address submissions to")
        calendar = BusinessCalendar(config.calendar)
        units = tuple(config.units)
        return cls(
            config=config,
            rules=Rules.from_config(config, calendar),
            calendar=calendar,
            zone=ZoneInfo(config.calendar.timezone),
            texts=text_bank(),
            source_prefix=source_prefix.rstrip("/") or DEFAULT_SOURCE_PREFIX,
            end=end,
            units=units,
            unit_weights=tuple(_unit_weight(config.units, u) for u in units),
        )

    def source(self, what: str) -> str:
        return f"{self.source_prefix}/{what}"

    def pick_unit(self, rng: random.Random, *, other_than: str | None = None) -> str:
        while True:
            unit = rng.choices(self.units, self.unit_weights)[0]
            if unit != other_than or len(self.units) == 1:
                return unit

    def unit_name(self, unit_id: str) -> str:
        unit = self.config.units.get(unit_id)
        return unit.name if unit else unit_id

    def new_code(self, rng: random.Random) -> str:
        while True:
            code = new_tracking_code(rng)
            if code not in self.used_codes:
                self.used_codes.add(code)
                return code


def _unit_weight(units: Mapping[str, Unit], unit_id: str) -> float:
    """Leaves (departments, wards, offices) hear most; the top of the tree least."""
    if units[unit_id].parent is None:
        return 0.5
    has_children = any(u.parent == unit_id for u in units.values())
    return 2.0 if has_children else 6.0


def _weighted(rng: random.Random, table: Sequence[tuple[str, int]]) -> str:
    return rng.choices([k for k, _ in table], [w for _, w in table])[0]


def _person(n: int) -> str:
    return f"p{n:06d}"


def _new_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _hours(h: float) -> timedelta:
    # Whole milliseconds: realistic stamps, and exact in any replay.
    return timedelta(milliseconds=round(h * 3_600_000))


# -- one submission ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    """A response a unit will post, unless something moves the submission first."""

    at: datetime
    kind: str
    referred_to: str | None = None


class _Tracker:
    """One submission: builds its events and follows its state as the pipeline will."""

    def __init__(self, world: _World, rng: random.Random, created_at: datetime) -> None:
        self.world = world
        self.rng = rng
        self.kind = _weighted(rng, KINDS)
        self.language = _weighted(rng, LANGUAGES)
        self.channel = _weighted(rng, CHANNELS)
        self.unit_id = world.pick_unit(rng)
        self.tracking_code = world.new_code(rng)
        self.submission_id = _new_id(rng)
        self.text: Composed = world.texts.submission(
            rng, kind=self.kind, language=self.language, unit_id=self.unit_id, channel=self.channel
        )
        self.created_at = created_at
        self.state: SubmissionState | None = None
        self.stances: dict[str, str] = {}
        self.overdue_escalations = 0
        self.referrals = 0
        self.last_time = created_at

    @property
    def is_open(self) -> bool:
        return self.state is not None and self.state.status == "open"

    def create(self) -> dict[str, Any]:
        rng = self.rng
        data = {
            "submission_id": self.submission_id,
            "tracking_code": self.tracking_code,
            "kind": self.kind,
            "title": self.text.title,
            "body": self.text.body,
            "language": self.language,
            "channel": self.channel,
            "unit_id": self.unit_id,
            "author": {
                "id": _person(rng.randrange(_PEOPLE)),
                "role": _weighted(rng, ROLES[self.language]),
            },
            "anonymous": rng.random() < 0.25,
        }
        return self._event(SUBMISSION_CREATED, data, self.created_at, self.channel)

    def advance_one(self, until: datetime) -> bool:
        """Fire the earliest deadline before ``until``, if any; True if it moved the submission."""
        assert self.state is not None
        due = decide.next_due(self.state)
        if due is None or not due < until:
            return False
        self.state, escalations = decide.advance(self.state, due + _ONE_US, self.world.rules)
        self.overdue_escalations += len(escalations)
        return bool(escalations)

    def vote(self, at: datetime, voter: str, stance: str | None) -> dict[str, Any]:
        data = {"submission_id": self.submission_id, "voter_id": voter}
        if stance is None:
            type_ = VOTE_RETRACTED
        else:
            type_, data["stance"] = VOTE_CAST, stance
        return self._event(type_, data, at, self.rng.choice(_VOTE_CHANNELS))

    def respond(self, at: datetime, kind: str, referred_to: str | None = None) -> dict[str, Any]:
        assert self.state is not None
        unit = self.state.unit_id
        data: dict[str, Any] = {
            "submission_id": self.submission_id,
            "response_id": _new_id(self.rng),
            "unit_id": unit,
            "kind": kind,
            "body": self.world.texts.response(
                self.rng,
                kind=kind,
                language=self.language,
                topic=self.text.topic,
                tracking_code=self.tracking_code,
                unit_name=self.world.unit_name(referred_to or unit),
            ),
        }
        if referred_to is not None:
            data["referred_to_unit_id"] = referred_to
            self.referrals += 1
        return self._event(RESPONSE_POSTED, data, at, "unit-desk")

    def rate(self, at: datetime, rating: int) -> dict[str, Any]:
        data: dict[str, Any] = {"submission_id": self.submission_id, "rating": rating}
        if self.rng.random() < 0.5:
            data["comment"] = self.world.texts.rating_comment(self.rng, rating, self.language)
        return self._event(SATISFACTION_RATED, data, at, self.channel)

    def withdraw(self, at: datetime) -> dict[str, Any]:
        data = {"submission_id": self.submission_id}
        if self.rng.random() < 0.6:
            data["reason"] = self.world.texts.withdrawal_reason(
                self.rng, self.language, self.channel
            )
        return self._event(SUBMISSION_WITHDRAWN, data, at, self.channel)

    def rating_for(self, closing: str) -> int:
        assert self.state is not None and self.state.closed_at is not None
        sla = self.world.rules.sla[self.kind]
        took = self.world.calendar.business_hours_between(self.created_at, self.state.closed_at)
        base = {"resolution": 4.4, "answer": 3.8, "rejection": 1.6}[closing]
        score = base - 0.6 * self.overdue_escalations - (0.8 if took > sla.resolution_hours else 0)
        return min(5, max(1, round(score + self.rng.gauss(0, 0.8))))

    def _event(self, type_: str, data: dict[str, Any], at: datetime, via: str) -> dict[str, Any]:
        # Events of one submission never go back in time, whatever rounding did.
        at = max(at, self.last_time)
        self.last_time = at
        event = build_event(type_, data, source=self.world.source(via), time=at, rng=self.rng)
        domain = to_domain(event)
        rules = self.world.rules
        if self.state is None:
            self.state = decide.create(domain, at, rules)  # type: ignore[arg-type]
            return event
        prev = None
        if type_ in (VOTE_CAST, VOTE_RETRACTED):
            prev = self.stances.get(data["voter_id"])
            if type_ == VOTE_CAST:
                self.stances[data["voter_id"]] = data["stance"]
            else:
                self.stances.pop(data["voter_id"], None)
        self.state, escalations = decide.advance(self.state, at, rules)
        self.overdue_escalations += len(escalations)
        decision = decide.apply(self.state, domain, at, rules, prev)  # type: ignore[arg-type]
        assert decision.state is not None
        self.state = decision.state
        return event


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

    def __init__(self, tracker: _Tracker, supporters: int) -> None:
        self.t = tracker
        self.rng = tracker.rng
        self.world = tracker.world
        self.neglected = self.rng.random() < _NEGLECTED
        self._seq = itertools.count()
        self.pending: list[_Pending] = []
        self._plan_votes(supporters)
        if self.rng.random() < _WITHDRAWN:
            self._push(
                tracker.created_at + _hours(self.rng.lognormvariate(math.log(20), 1.0)), "withdraw"
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
        voters = rng.sample(range(_PEOPLE), supporters + opposers)
        # Attention decays from creation; a popular one draws its crowd in a burst.
        median = rng.uniform(2, 18) if supporters >= 30 else rng.uniform(4, 48)
        sigma = 0.9 if supporters >= 30 else 1.2
        for i, n in enumerate(voters):
            voter = _person(n)
            stance = "support" if i < supporters else "oppose"
            at = t0 + _hours(rng.lognormvariate(math.log(median), sigma)) + timedelta(seconds=45)
            self._push(at, "vote", voter, stance)
            if rng.random() < _REVOTE:
                at += _hours(rng.lognormvariate(math.log(12), 1.0))
                stance = "oppose" if stance == "support" else "support"
                self._push(at, "vote", voter, stance)
            if rng.random() < _RETRACT:
                self._push(at + _hours(rng.lognormvariate(math.log(20), 1.0)), "vote", voter)

    def _plan_unit(self, cause: str) -> list[_Step]:
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
            return [_Step(first_at, first, world.pick_unit(rng, other_than=state.unit_id))]
        if first != "acknowledgement":
            return [_Step(first_at, first)]
        if rng.random() < 0.1:  # acknowledged, then stalled: the resolution clock runs out
            return [_Step(first_at, first)]
        close_h = rng.lognormvariate(math.log(0.3 * sla.resolution_hours), 0.6)
        close_h = max(close_h, first_h + 0.25)
        close_at = cal.add_business_hours(arrival, close_h) + timedelta(seconds=rng.randrange(60))
        closing = {
            "complaint": (("resolution", 50), ("answer", 38), ("rejection", 12)),
            "criticism": (("answer", 60), ("resolution", 25), ("rejection", 15)),
            "suggestion": (("answer", 55), ("resolution", 30), ("rejection", 15)),
            "question": (("answer", 85), ("resolution", 10), ("rejection", 5)),
        }[t.kind]
        return [_Step(first_at, first), _Step(close_at, _weighted(rng, closing))]

    def _plan_rating(self, closing: str) -> None:
        rng = self.rng
        if rng.random() < (0.35 if closing == "rejection" else 0.6):
            state = self.t.state
            assert state is not None and state.closed_at is not None
            at = (
                state.closed_at
                + timedelta(minutes=5)
                + _hours(rng.lognormvariate(math.log(6), 1.2))
            )
            self._push(at, "rate", rating=self.t.rating_for(closing))


# -- the whole history -------------------------------------------------------------------


class _Simulation:
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
        self.world = _World.build(config, self.start + self.span, source_prefix)
        self.rng = random.Random(seed)
        self.n = submissions
        self.trackers: list[_Tracker] = []

    def events(self) -> Iterator[dict[str, Any]]:
        rng = self.rng
        created = self._creation_times()
        supporters = self._supporters(created)
        seeds = [rng.getrandbits(64) for _ in range(self.n)]
        heap: list[tuple[datetime, int, int, dict[str, Any], Iterator[Any]]] = []
        started = 0
        while True:
            while started < self.n and (not heap or created[started] <= heap[0][0]):
                tracker = _Tracker(self.world, random.Random(seeds[started]), created[started])
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


# -- the live demo -----------------------------------------------------------------------


async def run_demo(
    settings: Settings,
    config: Config,
    bootstrap: str,
    *,
    seed: int | None = None,
    backfill_days: float = 10.0,
    backfill_submissions: int = 120,
    pace: float = 1.0,
) -> None:
    """Feed demo traffic to ``bootstrap`` until cancelled.

    First the last ``backfill_days`` of history (event times in the past, so
    missed deadlines escalate as soon as the pipeline reads them), then live
    events stamped with the wall clock: new submissions, votes, responses,
    ratings, and one submission whose support climbs past the first two
    support thresholds within a few minutes (past the first within about a
    minute). ``pace`` speeds the live part up (tests); ``seed`` defaults to the
    clock, so each run's ids differ from the last one's. ``settings`` is taken
    for the caller's symmetry; the demo needs only the broker and the
    organisation. Broker failures end the demo with a warning in the log, never
    the pipeline it feeds.
    """
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    rng = random.Random(time.time_ns() if seed is None else seed)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        await producer.start()
    except KafkaError as e:
        log.warning("demo traffic disabled: cannot reach %s: %s", bootstrap, e)
        return
    try:
        now = datetime.now(UTC)
        history = _Simulation(
            config,
            rng.getrandbits(64),
            backfill_submissions,
            now - timedelta(days=backfill_days),
            backfill_days,
            DEFAULT_SOURCE_PREFIX + "/demo",
        )
        futures = []
        for event in history.events():
            futures.append(await _send(producer, event))
            if len(futures) % 200 == 0:
                await asyncio.sleep(0)  # generating is CPU work: let the pipeline run too
        await asyncio.gather(*futures)
        log.info("demo: published %d events of backfilled history", len(futures))
        feed = _LiveFeed(history, rng, pace)
        while True:
            for event in feed.tick(datetime.now(UTC)):
                await (await _send(producer, event))
            await asyncio.sleep(feed.interval())
    except KafkaError as e:
        log.warning("demo traffic stopped: %s", e)
    except Exception:
        log.exception("demo traffic failed")
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()


async def _send(producer: Any, event: dict[str, Any]) -> Any:
    return await producer.send(
        topic_for(event), value=dumps(event), key=event["subject"].encode("utf-8")
    )


class _LiveFeed:
    """Wall-clock traffic after the backfill: a trickle, and one submission going viral."""

    def __init__(self, history: _Simulation, rng: random.Random, pace: float) -> None:
        self.world = history.world
        self.rng = rng
        self.pace = max(pace, 0.01)
        self.trackers = [t for t in history.trackers if t.state is not None]
        self.viral: _Tracker | None = None
        ladder = self.world.config.ladder
        self.viral_target = (ladder[1] if len(ladder) > 1 else ladder[0]) + 30 if ladder else 60
        self.viral_votes = 0
        self.ratings: list[tuple[datetime, _Tracker, str]] = []
        self.started: datetime | None = None

    def interval(self) -> float:
        return self.rng.uniform(0.4, 1.0) / self.pace

    def tick(self, now: datetime) -> list[dict[str, Any]]:
        rng = self.rng
        out: list[dict[str, Any]] = []
        if self.started is None:
            self.started = now
        if self.viral is None:
            self.viral = self._new_submission(
                now, out, kind="suggestion", language="fa", unit_id=self._leaf()
            )
        elif self.viral_votes < self.viral_target:
            # About 1.2 supporters a second: past 50 in under a minute.
            elapsed = (now - self.started).total_seconds() * self.pace
            due = min(self.viral_target, int(elapsed * 1.2))
            while self.viral_votes < due:
                self.viral_votes += 1
                self._vote(self.viral, now, out, "support")
        if rng.random() < 0.08:
            self._new_submission(now, out)
        if rng.random() < 0.35 and self.trackers:
            target = self._popular()
            stance = "support" if rng.random() < 0.85 else "oppose"
            self._vote(target, now, out, stance if rng.random() > 0.05 else None)
        if rng.random() < 0.12:
            self._respond(now, out)
        ripe = [r for r in self.ratings if r[0] <= now]
        self.ratings = [r for r in self.ratings if r[0] > now]
        for _, tracker, closing in ripe:
            out.append(tracker.rate(now, tracker.rating_for(closing)))
        return out

    def _new_submission(
        self,
        now: datetime,
        out: list[dict[str, Any]],
        kind: str | None = None,
        language: str | None = None,
        unit_id: str | None = None,
    ) -> _Tracker:
        tracker = _Tracker(self.world, random.Random(self.rng.getrandbits(64)), now)
        if kind or language or unit_id:
            tracker.kind = kind or tracker.kind
            tracker.language = language or tracker.language
            tracker.unit_id = unit_id or tracker.unit_id
            tracker.text = self.world.texts.submission(
                tracker.rng,
                kind=tracker.kind,
                language=tracker.language,
                unit_id=tracker.unit_id,
                channel=tracker.channel,
            )
        out.append(tracker.create())
        self.trackers.append(tracker)
        return tracker

    def _vote(
        self, tracker: _Tracker, now: datetime, out: list[dict[str, Any]], stance: str | None
    ) -> None:
        self._catch_up(tracker, now)
        voter = _person(self.rng.randrange(_PEOPLE))
        if stance is None:
            if not tracker.stances:
                return
            voter = self.rng.choice(sorted(tracker.stances))
        out.append(tracker.vote(now, voter, stance))

    def _respond(self, now: datetime, out: list[dict[str, Any]]) -> None:
        open_ones = [t for t in self.trackers if t.is_open and t is not self.viral]
        if not open_ones:
            return
        tracker = self.rng.choice(open_ones)
        self._catch_up(tracker, now)
        if not tracker.is_open:
            return
        assert tracker.state is not None
        if tracker.state.first_response_at is None:
            out.append(tracker.respond(now, "acknowledgement"))
            return
        kind = self.rng.choice(("answer", "answer", "resolution", "rejection"))
        out.append(tracker.respond(now, kind))
        if kind != "rejection" and self.rng.random() < 0.5:
            delay = timedelta(seconds=self.rng.uniform(20, 120) / self.pace)
            self.ratings.append((now + delay, tracker, kind))

    def _leaf(self) -> str:
        """A unit with a parent and no children: support escalations have somewhere to go."""
        units = self.world.config.units
        leaves = [
            u
            for u in units.values()
            if u.parent and not any(v.parent == u.id for v in units.values())
        ]
        return self.rng.choice(leaves).id if leaves else self.world.units[0]

    def _popular(self) -> _Tracker:
        """A recent or much-supported submission: what people see on the portal's front page."""
        recent = [t for t in self.trackers[-40:] if t.state and t.state.status != "withdrawn"]
        weights = [1.0 + (t.state.support if t.state else 0) for t in recent]
        return self.rng.choices(recent, weights)[0]

    @staticmethod
    def _catch_up(tracker: _Tracker, now: datetime) -> None:
        while tracker.advance_one(now):
            pass

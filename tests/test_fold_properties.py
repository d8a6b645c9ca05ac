"""Random histories: the fold agrees with the reference model, and delivery is exactly-once.

Each example is a history of a few submissions of the demo university:
creations, votes (re-votes and retractions from a small pool of voters), follows
and unfollows by the same pool,
responses from the unit holding the submission or from another one,
referrals, withdrawals, ratings, late events and ticks, separated by gaps of
minutes to weeks. It is written as canonical-log records in time order, then:

(a) a :class:`PartitionFold` over the log must reach the reference model's
    outcome (``domain_oracle``): support, oppose, level, unit, status, the
    clocks, and every escalation with its instant;
(b) a :class:`Projector` over a :class:`MemoryStore`, fed the log in random
    batches with redelivered prefixes, restarts from the store and duplicated
    event records, must end in the states and escalations of a clean single pass;
(c) a fresh projector replaying the same log must produce equal states and
    equal escalations.

The ladder is lowered to 2 / 3 / 5 supporters so a pool of six voters climbs it.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from domain_oracle import (
    Create,
    Escalation,
    Event,
    Follow,
    Model,
    Outcome,
    Rate,
    Respond,
    Submission,
    Vote,
    Withdraw,
    replay,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from sada.pipeline.domain.config import load_config
from sada.pipeline.domain.fold import DictStances, PartitionFold
from sada.pipeline.domain.logcodec import decode, encode_event, encode_tick
from sada.pipeline.domain.memstore import MemoryStore
from sada.pipeline.domain.model import Escalated, SubmissionState
from sada.pipeline.domain.projector import Projector
from sada.pipeline.domain.rules import Rules

CONFIG = load_config()
LADDER = (2, 3, 5)
RULES = dataclasses.replace(Rules.from_config(CONFIG), ladder=LADDER)
MODEL = Model.from_config(CONFIG, ladder=LADDER)
UNITS = sorted(CONFIG.units)
KINDS = sorted(CONFIG.sla)
VOTERS = [f"voter-{i}" for i in range(6)]
RESPONSES = ["acknowledgement"] * 4 + ["referral", "referral", "answer"]
RESPONSES += ["resolution", "rejection"]
# Histories start anywhere in a year that holds every kind of holiday of the demo calendar.
EPOCH = datetime(2026, 3, 1, tzinfo=UTC)
SOURCE = "/test/history"


# -- histories ------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One canonical-log record: an event (its CloudEvent) or a tick (``ce`` is None)."""

    at: datetime
    ce: dict[str, Any] | None = None
    late: bool = False
    topic: str = ""

    def encode(self) -> bytes:
        if self.ce is None:
            return encode_tick(self.at)
        return encode_event(self.ce, self.at, self.late, self.topic)


@dataclass(frozen=True)
class History:
    entries: list[Entry]
    expected: dict[str, Outcome]

    @property
    def log(self) -> list[bytes]:
        return [e.encode() for e in self.entries]


# A gap that lands exactly on the submission's next deadline: in time, by one instant.
AT_DEADLINE = -1
minutes = st.integers(0, 59)
gaps = st.one_of(
    minutes,  # votes cluster, so the ladder is climbed between overdue steps
    minutes,
    minutes,
    st.integers(1, 48).map(lambda h: h * 60),  # hours
    st.integers(1, 21).map(lambda d: d * 1440),  # days to weeks
    st.just(AT_DEADLINE),
)
# (from the holding unit?, the other unit, response kind, unit referred to)
responses = st.tuples(
    st.just("respond"),
    st.sampled_from([True, True, True, False]),
    st.sampled_from(UNITS),
    st.sampled_from(RESPONSES),
    st.sampled_from(UNITS),
)
# The root is addressed often: there the ladder and the deadlines cannot move anything.
addressed = st.one_of(st.just("univ"), st.sampled_from(UNITS))
# Each action's share of the steps, in percent.
ACTIONS: list[tuple[int, st.SearchStrategy[tuple[Any, ...]]]] = [
    (34, st.tuples(st.just("vote"), st.sampled_from(VOTERS), st.just("support"))),
    (3, st.tuples(st.just("follow"), st.sampled_from(VOTERS), st.just(True))),
    (3, st.tuples(st.just("follow"), st.sampled_from(VOTERS), st.just(False))),
    (10, st.tuples(st.just("vote"), st.sampled_from(VOTERS), st.just("oppose"))),
    (10, st.tuples(st.just("retract"), st.sampled_from(VOTERS))),
    (20, responses),
    (3, st.tuples(st.just("withdraw"))),
    (5, st.tuples(st.just("rate"), st.integers(1, 5))),
    (12, st.tuples(st.just("tick"))),
]
assert sum(share for share, _ in ACTIONS) == 100


@st.composite
def actions(draw: st.DrawFn) -> tuple[Any, ...]:
    roll = draw(st.integers(0, 99))
    for share, strategy in ACTIONS:
        if roll < share:
            return draw(strategy)
        roll -= share
    raise AssertionError("shares add up to 100")


# Minutes by which an event's own time precedes the instant it takes effect (late events).
lateness = st.one_of(st.just(0), st.just(0), st.integers(1, 600))


@st.composite
def histories(draw: st.DrawFn) -> History:
    submissions = draw(
        st.lists(st.tuples(st.sampled_from(KINDS), addressed), min_size=1, max_size=3)
    )
    steps = draw(
        st.lists(st.tuples(gaps, st.integers(0, 2), actions(), lateness), min_size=5, max_size=60)
    )
    start = EPOCH + timedelta(minutes=draw(st.integers(0, 365 * 1440)))
    tail = draw(st.one_of(st.integers(0, 1440), st.integers(1, 80).map(lambda d: d * 1440)))
    return materialize(start, submissions, steps, tail)


def materialize(
    start: datetime,
    submissions: Sequence[tuple[str, str]],
    steps: Sequence[tuple[int, int, tuple[Any, ...], int]],
    tail: int,
) -> History:
    """Turn drawn steps into log entries, feeding the reference model as it goes.

    A step aimed at a submission not created yet creates it. "From the holding
    unit" and "at the next deadline" are resolved against a model kept in step;
    the expected outcome is a separate replay of each submission's history.
    """
    ids = itertools.count()
    sids = [f"sub-{i}" for i in range(len(submissions))]
    model = {sid: Submission(MODEL) for sid in sids}
    fed: dict[str, list[tuple[datetime, Event]]] = {sid: [] for sid in sids}
    entries: list[Entry] = []
    t = start

    def emit(
        sid: str, type_: str, topic: str, data: dict[str, Any], event: Event, late: int
    ) -> None:
        ce = {
            "specversion": "1.0",
            "id": event.key,
            "source": SOURCE,
            "type": type_,
            "time": (t - timedelta(minutes=late)).isoformat(),
            "subject": sid,
            "datacontenttype": "application/json",
            "data": {"submission_id": sid, **data},
        }
        entries.append(Entry(t, ce, late > 0, topic))
        model[sid].apply(t, event)
        fed[sid].append((t, event))

    for gap, which, action, late in steps:
        sid = sids[which % len(sids)]
        sub = model[sid]
        if gap == AT_DEADLINE:
            sub.run_clock(t)
            t = min(sub.next_deadlines(), default=t)
        else:
            t += timedelta(minutes=gap)
        key = f"e{next(ids)}"
        if not sub.created:
            kind, unit = submissions[which % len(sids)]
            data = {
                "tracking_code": f"{7816838 + which}",
                "kind": kind,
                "unit_id": unit,
                "channel": "web",
                "title": "صدای دانشجو",
                "body": "x",
                "language": "fa",
                "author": {"id": f"author-{which}", "role": "student"},
                "anonymous": False,
            }
            emit(
                sid, "sada.submission.created", "sada.submissions", data, Create(key, kind, unit), 0
            )
            continue
        match action:
            case ("vote", voter, stance):
                data = {"voter_id": voter, "stance": stance}
                emit(sid, "sada.vote.cast", "sada.votes", data, Vote(key, voter, stance), late)
            case ("retract", voter):
                data = {"voter_id": voter}
                emit(sid, "sada.vote.retracted", "sada.votes", data, Vote(key, voter, None), late)
            case ("follow", person, on):
                data = {"follower_id": person}
                type_ = "sada.submission.followed" if on else "sada.submission.unfollowed"
                emit(sid, type_, "sada.votes", data, Follow(key, person, on), late)
            case ("respond", from_holder, other, kind, target):
                sub.run_clock(t)
                unit = sub.out.unit if from_holder else other
                to = target if kind == "referral" else None
                data = {"response_id": f"r-{key}", "unit_id": unit, "kind": kind, "body": "پاسخ"}
                if to is not None:
                    data["referred_to_unit_id"] = to
                event = Respond(key, unit, kind, to)
                emit(sid, "sada.response.posted", "sada.responses", data, event, late)
            case ("withdraw",):
                emit(sid, "sada.submission.withdrawn", "sada.submissions", {}, Withdraw(key), late)
            case ("rate", rating):
                data = {"rating": rating}
                emit(
                    sid, "sada.satisfaction.rated", "sada.responses", data, Rate(key, rating), late
                )
            case ("tick",):
                entries.append(Entry(t))
    end = t + timedelta(minutes=tail)
    entries.append(Entry(end))
    expected = {sid: replay(MODEL, fed[sid], end) for sid in sids if model[sid].created}
    return History(entries, expected)


# -- (a) the fold against the reference model ------------------------------------------------


def _as_model(e: Escalated) -> Escalation:
    return Escalation(
        e.reason,
        e.from_unit_id,
        e.to_unit_id,
        e.from_level,
        e.to_level,
        e.time,
        e.deadline,
        e.support,
    )


def _summary(s: SubmissionState) -> tuple[Any, ...]:
    return (
        s.status,
        s.unit_id,
        s.level,
        s.support,
        s.oppose,
        s.first_response_due,
        s.resolution_due,
        s.first_response_overdue,
        s.resolution_overdue,
    )


def _expected_summary(o: Outcome) -> tuple[Any, ...]:
    return (
        o.status,
        o.unit,
        o.level,
        o.support,
        o.oppose,
        o.first_response_due,
        o.resolution_due,
        o.first_response_overdue,
        o.resolution_overdue,
    )


@settings(max_examples=200, deadline=None)
@given(histories())
def test_fold_agrees_with_the_reference_model(history: History) -> None:
    fold = PartitionFold(RULES, DictStances(), set[str]())
    escalations: dict[str, list[Escalated]] = defaultdict(list)
    for raw in history.log:
        record, _ = decode(raw)
        for esc in fold.apply(record).escalations:
            escalations[esc.submission_id].append(esc)
    assert set(fold.states) == set(history.expected)
    for sid, want in history.expected.items():
        assert _summary(fold.states[sid]) == _expected_summary(want), sid
        assert [_as_model(e) for e in escalations[sid]] == want.escalations, sid


def test_moved_deadlines_do_not_pile_up_and_still_fire_as_the_model_says() -> None:
    """Acknowledgements and referrals move every submission's deadlines, twice.

    Each move leaves the deadline index an entry that can no longer fire; the
    index must still hold about one entry per submission with a running clock,
    and every escalation must come out as the reference model has it.
    """
    n = 150
    submissions = [(KINDS[i % len(KINDS)], UNITS[i % len(UNITS)]) for i in range(n)]
    created = [(1, i, ("tick",), 0) for i in range(n)]  # a step at a new submission creates it
    acknowledged = [
        (2, i, ("respond", True, UNITS[0], "acknowledgement", UNITS[0]), 0) for i in range(n)
    ]
    referred = [
        (3, i, ("respond", True, UNITS[0], "referral", UNITS[(i + 1) % len(UNITS)]), 0)
        for i in range(n)
    ]
    history = materialize(EPOCH, submissions, created + acknowledged + referred, 80 * 1440)

    fold = PartitionFold(RULES, DictStances(), set[str]())
    escalations: dict[str, list[Escalated]] = defaultdict(list)
    largest = 0
    for raw in history.log:
        for esc in fold.apply(decode(raw)[0]).escalations:
            escalations[esc.submission_id].append(esc)
        largest = max(largest, fold.deadline_entries())
    # Without dropping stale entries the index would reach three per submission.
    assert largest <= n + n // 4 + 64
    assert set(fold.states) == set(history.expected)
    for sid, want in history.expected.items():
        assert _summary(fold.states[sid]) == _expected_summary(want), sid
        assert [_as_model(e) for e in escalations[sid]] == want.escalations, sid
    assert sum(len(e) for e in escalations.values()) > 0


# -- (b), (c) exactly-once delivery to the projector ----------------------------------------------


@dataclass(frozen=True)
class Projection:
    states: dict[str, SubmissionState]
    escalations: list[Escalated]  # in the order the projector emitted them
    store: MemoryStore


def _project_once(log: Sequence[bytes]) -> Projection:
    store = MemoryStore()
    result = Projector(RULES, store, 0).apply_batch(list(enumerate(log)))
    return Projection(_states(store), result.escalations, store)


def _states(store: MemoryStore) -> dict[str, SubmissionState]:
    return {sid: state for sid, (_, state) in store.states.items()}


def _followers(store: MemoryStore) -> dict[str, set[str]]:
    """Each created submission's followers other than its author."""
    return {
        sid: {r for r in store.follows.get(sid, {}) if r.startswith("follower:")}
        for sid in store.states
    }


def _told(store: MemoryStore) -> dict[str, Any]:
    """Who was told what, whatever batch each notification was decided in."""
    return {nid: entry[3] for nid, entry in store.notifications.items()}


def _with_duplicates(entries: list[Entry], data: st.DataObject) -> tuple[list[Entry], int]:
    """Copies of earlier event records (same CloudEvent) placed later in the log."""
    out = list(entries)
    added = 0
    for _ in range(data.draw(st.integers(0, 4), label="duplicates")):
        events = [i for i, e in enumerate(out[:-1]) if e.ce is not None]
        if not events:
            break
        i = data.draw(st.sampled_from(events), label="original")
        j = data.draw(st.integers(i + 1, len(out) - 1), label="copy before")
        # The copy takes effect where it lands: at the instant of the record before it.
        out.insert(j, dataclasses.replace(out[i], at=out[j - 1].at))
        added += 1
    return out, added


@settings(max_examples=120, deadline=None)
@given(histories(), st.data())
def test_projector_delivery_is_exactly_once_and_replay_is_equal(
    history: History, data: st.DataObject
) -> None:
    clean = _project_once(history.log)
    # The projector's states are the fold's (checked against the model above).
    fold = PartitionFold(RULES, DictStances(), set[str]())
    for raw in history.log:
        fold.apply(decode(raw)[0])
    assert clean.states == fold.states

    entries, duplicates = _with_duplicates(history.entries, data)
    log = [e.encode() for e in entries]
    store = MemoryStore()
    projector = Projector(RULES, store, 0)
    emitted: list[Escalated] = []
    seen_duplicates = 0
    pos = 0
    while pos < len(log):
        if data.draw(st.integers(0, 7), label="restart") == 0:
            # A new process takes over from what the store committed.
            projector = Projector(RULES, store, 0)
        back = data.draw(st.integers(0, min(pos, 6)), label="redelivered")
        end = min(len(log), pos + data.draw(st.integers(1, 8), label="batch size"))
        result = projector.apply_batch([(o, log[o]) for o in range(pos - back, end)])
        assert result.skipped == back
        assert result.applied == end - pos
        emitted += result.escalations
        seen_duplicates += result.duplicates
        pos = end
        if pos > 1 and data.draw(st.booleans(), label="replay an old batch"):
            lo = data.draw(st.integers(0, pos - 1), label="old batch start")
            stale = projector.apply_batch([(o, log[o]) for o in range(lo, pos)])
            assert (stale.applied, stale.skipped, stale.escalations) == (0, pos - lo, [])

    assert seen_duplicates == duplicates
    assert _states(store) == clean.states
    assert emitted == clean.escalations
    assert [e.event_id for e in emitted] == [e.event_id for e in clean.escalations]
    assert store.escalations == clean.store.escalations
    assert store.votes == clean.store.votes
    # Who follows each submission is the reference model's, however the log was batched.
    assert _followers(clean.store) == {
        sid: {f"follower:{p}" for p in o.followers} for sid, o in history.expected.items()
    }
    assert store.follows == clean.store.follows
    assert _told(store) == _told(clean.store)

    # (c) A fresh projector replaying the same log decides the same, bit for bit.
    replay = _project_once(log)
    assert replay.states == _states(store)
    assert replay.escalations == emitted
    assert replay.store.events == store.events
    assert replay.store.archive == store.archive
    assert replay.store.follows == store.follows
    assert _told(replay.store) == _told(store)

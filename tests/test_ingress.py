"""Ingress ordering: event-time release, the watermark, idleness, lateness, grace, rejection.

The pure :class:`Ingress` is driven with an explicit wall clock ``now``
(seconds). Decoding and schema validation are injected functions by design;
here they only parse JSON, since the real contract checks are tested with the
schemas. The unit tree is the demo university's.

Every released log record is decoded back with :mod:`sada.pipeline.domain.logcodec`,
so the tests look at what the projector will see: which events, in what
order, at what effective instant, and whether late.
"""

from __future__ import annotations

import itertools
import json
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sada.pipeline.domain.config import load_config
from sada.pipeline.domain.fold import EventRecord, TickRecord
from sada.pipeline.domain.ingress import Absorb, Ingress, InputMessage, Output, Reject, Release
from sada.pipeline.domain.logcodec import decode
from sada.pipeline.domain.reasons import Reason

UNITS = sorted(load_config().units)
DEPT = "univ.fac-medicine.anatomy"
TOPIC_OF_TYPE = {
    "sada.submission.created": "sada.submissions",
    "sada.submission.withdrawn": "sada.submissions",
    "sada.vote.cast": "sada.votes",
    "sada.vote.retracted": "sada.votes",
    "sada.response.posted": "sada.responses",
    "sada.satisfaction.rated": "sada.responses",
}
SUBS, VOTES, RESPONSES = "sada.submissions", "sada.votes", "sada.responses"
T = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)


def minutes(n: float) -> datetime:
    return T + timedelta(minutes=n)


def parse_json(raw: bytes, max_bytes: int) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(raw)
    return value


def accept_all(ce: object) -> None:
    return None


def partition_for(submission_id: str, partitions: int) -> int:
    return zlib.crc32(submission_id.encode()) % partitions


@dataclass
class Bench:
    """An ingress, the messages offered to it and everything it output."""

    ingress: Ingress
    offered: list[InputMessage] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    _offsets: Counter[tuple[str, int]] = field(default_factory=Counter)

    @classmethod
    def make(cls, **options: Any) -> Bench:
        settings: dict[str, Any] = {
            "units": UNITS,
            "log_partitions": 2,
            "partition_for": partition_for,
            "decode": parse_json,
            "validate": accept_all,
            "topic_of_type": TOPIC_OF_TYPE,
            "clock_mode": "event",
            "idle_seconds": 30.0,
            "tick_seconds": 0.0,
            "grace_seconds": 10.0,
        }
        settings.update(options)
        return cls(Ingress(**settings))

    def send(
        self, topic: str, partition: int, ce: dict[str, Any], now: float
    ) -> tuple[InputMessage, list[Output]]:
        offset = self._offsets[(topic, partition)]
        self._offsets[(topic, partition)] += 1
        sid = str(ce.get("data", {}).get("submission_id", ""))
        msg = InputMessage(topic, partition, offset, sid.encode(), json.dumps(ce).encode())
        self.offered.append(msg)
        out = self.ingress.offer(msg, now)
        self.outputs += out
        return msg, out

    def poll(self, now: float) -> list[Output]:
        out = self.ingress.poll(now)
        self.outputs += out
        return out

    def released_events(self) -> list[tuple[EventRecord, dict[str, Any]]]:
        """Released event records, decoded, in release order."""
        out = []
        for o in self.outputs:
            if isinstance(o, Release) and o.settles is not None:
                record, ce = decode(o.value)
                assert isinstance(record, EventRecord) and ce is not None
                out.append((record, ce))
        return out

    def released_ids(self) -> list[str]:
        return [ce["id"] for _, ce in self.released_events()]

    def assert_each_offer_settled_once(self) -> None:
        """Every offered message ends in exactly one Release, Reject or Absorb."""
        settled = Counter(
            o.settles if isinstance(o, Release) else o.message.position
            for o in self.outputs
            if not (isinstance(o, Release) and o.settles is None)
        )
        assert settled == Counter(m.position for m in self.offered)


_ids = itertools.count()


def event(type_: str, sid: str, time: datetime, source: str = "/test/ingress", **data: Any) -> Any:
    return {
        "specversion": "1.0",
        "id": data.pop("id", f"ev-{next(_ids)}"),
        "source": source,
        "type": type_,
        "time": time.isoformat(),
        "subject": sid,
        "datacontenttype": "application/json",
        "data": {"submission_id": sid, **data},
    }


def created(sid: str, time: datetime, unit: str = DEPT, **extra: Any) -> Any:
    return event(
        "sada.submission.created",
        sid,
        time,
        tracking_code=extra.pop("tracking_code", f"code-{sid}"),
        kind="complaint",
        unit_id=unit,
        channel="web",
        title="t",
        body="b",
        language="fa",
        author={"id": "a", "role": "student"},
        anonymous=False,
        **extra,
    )


def vote(sid: str, time: datetime, voter: str = "v", **extra: Any) -> Any:
    return event("sada.vote.cast", sid, time, voter_id=voter, stance="support", **extra)


# -- ordering and the watermark ----------------------------------------------------------


def test_two_partitions_are_merged_in_event_time_order_up_to_the_least_time() -> None:
    bench = Bench.make()
    bench.send(SUBS, 0, created("s1", minutes(0)), now=0)
    # Two vote partitions arrive interleaved and out of order between them.
    for i, m in enumerate([1, 5, 9]):
        bench.send(VOTES, 0, vote("s1", minutes(m), voter=f"a{i}"), now=1)
    for i, m in enumerate([2, 3, 10]):
        bench.send(VOTES, 1, vote("s1", minutes(m), voter=f"b{i}"), now=1)
    # The submissions partition has reached only minute 0: it holds the clock there.
    assert bench.ingress.clock == minutes(0)
    assert [r.event.time for r, _ in bench.released_events()] == [minutes(0)]
    # It moves on to minute 20; the least time of the three partitions is now 9.
    bench.send(SUBS, 0, created("s2", minutes(20)), now=2)
    assert bench.ingress.clock == minutes(9)
    released = [r.event.time for r, _ in bench.released_events()]
    assert released == [minutes(m) for m in [0, 1, 2, 3, 5, 9]]
    bench.send(VOTES, 0, vote("s1", minutes(15), voter="a9"), now=3)
    assert bench.ingress.clock == minutes(10)
    records = [r for r, _ in bench.released_events()]
    assert [r.event.time for r in records] == [minutes(m) for m in [0, 1, 2, 3, 5, 9, 10]]
    # In time: each takes effect at its own time.
    assert all(r.at == r.event.time and not r.late for r in records)


def test_an_idle_partition_stops_holding_the_clock_back() -> None:
    bench = Bench.make(idle_seconds=30.0)
    bench.send(SUBS, 0, created("s1", minutes(0)), now=0)
    bench.send(VOTES, 1, vote("s1", minutes(1)), now=0)  # votes/1 then falls silent
    bench.send(VOTES, 0, vote("s1", minutes(30), voter="w"), now=10)
    bench.send(SUBS, 0, created("s2", minutes(40)), now=10)
    assert bench.ingress.clock == minutes(1)  # votes/1 is still active, at minute 1
    bench.send(VOTES, 0, vote("s1", minutes(35), voter="x"), now=29.9)
    bench.send(SUBS, 0, created("s3", minutes(41)), now=29.9)
    assert bench.ingress.clock == minutes(1)
    # 30 s after votes/1 was last heard of, only the active partitions count: minute 35.
    bench.poll(now=30)
    assert bench.ingress.clock == minutes(35)
    assert [r.event.time for r, _ in bench.released_events()] == [
        minutes(m) for m in [0, 1, 30, 35]
    ]


def test_a_partition_assigned_but_silent_holds_the_clock_until_idle() -> None:
    bench = Bench.make(idle_seconds=30.0)
    bench.ingress.track_partitions([(SUBS, 0), (VOTES, 0)], now=0)
    # The votes partition delivers first; the submissions partition may still hold
    # older events not yet fetched, so nothing is released and nothing is late.
    bench.send(VOTES, 0, vote("s1", minutes(60)), now=1)
    assert bench.ingress.clock is None
    bench.send(SUBS, 0, created("s1", minutes(0)), now=2)
    records = [r for r, _ in bench.released_events()]
    assert [(r.event.time, r.late) for r in records] == [(minutes(0), False)]
    # A partition that never delivers stops holding the clock once idle.
    other = Bench.make(idle_seconds=30.0)
    other.ingress.track_partitions([(SUBS, 0), (SUBS, 1)], now=0)
    other.send(SUBS, 0, created("s1", minutes(0)), now=1)
    assert other.ingress.clock is None
    other.poll(now=30)
    assert other.ingress.clock == minutes(0)


def test_wall_mode_all_idle_moves_the_clock_to_wall_time_and_ticks_every_log_partition() -> None:
    bench = Bench.make(clock_mode="wall", idle_seconds=5.0, log_partitions=3)
    wall = T + timedelta(hours=2)
    bench.send(SUBS, 0, created("s1", minutes(0)), now=wall.timestamp())
    # A producer whose clock runs an hour ahead cannot pull decisions into the future.
    bench.send(VOTES, 0, vote("s1", wall + timedelta(hours=1)), now=wall.timestamp())
    assert bench.ingress.clock == minutes(0)  # subs/0 is active at minute 0
    later = wall + timedelta(seconds=10)
    out = bench.poll(now=later.timestamp())
    assert bench.ingress.clock == later
    ticks = [o for o in out if isinstance(o, Release) and o.settles is None]
    assert sorted(o.log_partition for o in ticks) == [0, 1, 2]
    for o in ticks:
        record, ce = decode(o.value)
        assert ce is None and record == TickRecord(later)
    assert len(bench.released_events()) == 1  # the early vote still waits for its time
    bench.poll(now=(wall + timedelta(hours=1, seconds=1)).timestamp())
    assert len(bench.released_events()) == 2


def test_event_mode_all_idle_moves_the_clock_to_the_greatest_time_seen() -> None:
    bench = Bench.make(clock_mode="event", idle_seconds=5.0)
    bench.send(SUBS, 0, created("s1", minutes(0)), now=0)
    bench.send(VOTES, 0, vote("s1", minutes(50)), now=0)
    bench.send(VOTES, 1, vote("s1", minutes(70), voter="w"), now=0)
    assert bench.ingress.clock == minutes(0)
    bench.poll(now=5)
    assert bench.ingress.clock == minutes(70)
    assert [r.event.time for r, _ in bench.released_events()] == [
        minutes(0),
        minutes(50),
        minutes(70),
    ]
    # Nothing arrives for a long while: in event mode the clock stays put.
    bench.poll(now=10_000)
    assert bench.ingress.clock == minutes(70)


# -- late events, duplicates, missing submissions ----------------------------------------


def test_a_late_event_takes_effect_at_the_clock_and_is_marked_late() -> None:
    bench = Bench.make(idle_seconds=5.0)
    bench.send(SUBS, 0, created("s1", minutes(0)), now=0)
    bench.send(VOTES, 0, vote("s1", minutes(30)), now=0)
    bench.poll(now=5)
    assert bench.ingress.clock == minutes(30)
    _, out = bench.send(VOTES, 1, vote("s1", minutes(10), voter="late"), now=6)
    [release] = [o for o in out if isinstance(o, Release) and o.settles is not None]
    assert release.late
    record, ce = decode(release.value)
    assert isinstance(record, EventRecord)
    assert (record.at, record.late, record.event.time) == (minutes(30), True, minutes(10))
    assert ce is not None and ce["time"] == minutes(10).isoformat()  # stored as sent


def test_the_same_source_and_id_is_absorbed_once_seen() -> None:
    bench = Bench.make()
    bench.send(SUBS, 0, created("s1", minutes(0)), now=0)
    first = vote("s1", minutes(1), id="vote-1")
    bench.send(VOTES, 0, first, now=0)
    # Redelivered while buffered, and again after release: absorbed both times.
    msg, out = bench.send(VOTES, 0, dict(first), now=0)
    assert out == [Absorb(msg, "sada.vote.cast")]
    bench.poll(now=100)
    assert bench.released_ids().count("vote-1") == 1
    msg, out = bench.send(VOTES, 1, dict(first), now=101)
    assert out == [Absorb(msg, "sada.vote.cast")]
    # The same id from another source is another event.
    bench.send(VOTES, 0, vote("s1", minutes(2), source="/test/other", id="vote-1"), now=102)
    bench.poll(now=200)
    assert bench.released_ids().count("vote-1") == 2
    bench.assert_each_offer_settled_once()


def test_a_vote_before_its_submission_waits_and_follows_it_in_event_time() -> None:
    bench = Bench.make()
    bench.ingress.track_partitions([(SUBS, 0), (VOTES, 0)], now=0)
    # The vote (minute 5) arrives before its submission (minute 0) is published.
    bench.send(VOTES, 0, vote("s9", minutes(5)), now=0)
    assert bench.released_events() == []
    bench.send(SUBS, 0, created("s9", minutes(0)), now=1)
    # The clock is at minute 0: the submission is logged, the vote is not yet due.
    assert bench.ingress.clock == minutes(0)
    assert [ce["type"] for _, ce in bench.released_events()] == ["sada.submission.created"]
    # Another submission at minute 3 is in time (not overtaken by the waiting vote).
    bench.send(SUBS, 0, created("s10", minutes(3)), now=2)
    bench.send(SUBS, 0, created("s11", minutes(6)), now=3)
    records = [(r.event.submission_id, r.at, r.late) for r, _ in bench.released_events()]
    assert records == [
        ("s9", minutes(0), False),
        ("s10", minutes(3), False),
        ("s9", minutes(5), False),
    ]
    bench.poll(now=60)
    bench.assert_each_offer_settled_once()


def test_a_vote_stamped_before_its_submission_follows_it() -> None:
    bench = Bench.make()
    bench.send(VOTES, 0, vote("s1", minutes(0)), now=0)
    bench.send(SUBS, 0, created("s1", minutes(2)), now=0)
    bench.poll(now=100)
    records = [(ce["type"], r.at) for r, ce in bench.released_events()]
    assert records == [("sada.submission.created", minutes(2)), ("sada.vote.cast", minutes(2))]


def test_a_vote_for_a_submission_that_never_comes_is_rejected_after_the_grace() -> None:
    bench = Bench.make(grace_seconds=10.0)
    msg, _ = bench.send(VOTES, 0, vote("ghost", minutes(0)), now=0)
    assert not [o for o in bench.poll(now=9.9) if isinstance(o, Reject)]
    [reject] = [o for o in bench.poll(now=10) if isinstance(o, Reject)]
    assert (reject.message, reject.reason) == (msg, Reason.UNKNOWN_SUBMISSION)
    assert bench.released_events() == []
    bench.poll(now=100)
    bench.assert_each_offer_settled_once()


def test_the_grace_does_not_run_out_while_the_submissions_topic_is_behind() -> None:
    # A burst: the consumer has handed over the votes, but the submissions
    # partition still holds unread records (a backlog), so a waiting vote's
    # submission may simply not be read yet.
    bench = Bench.make(grace_seconds=10.0, idle_seconds=2.0)
    bench.send(VOTES, 0, vote("late-read", minutes(1)), now=0)
    for now in (5.0, 10.0, 15.0, 20.0):
        bench.ingress.backlogged((SUBS, 0), now)
        assert not [o for o in bench.poll(now=now) if isinstance(o, Reject)]
    # Read at last: the vote follows its submission instead of being rejected.
    bench.send(SUBS, 0, created("late-read", minutes(0)), now=21)
    bench.poll(now=100)
    assert [ce["type"] for _, ce in bench.released_events()] == [
        "sada.submission.created",
        "sada.vote.cast",
    ]
    bench.assert_each_offer_settled_once()
    # Once the topic has caught up, a submission that never comes is rejected.
    ghost, _ = bench.send(VOTES, 0, vote("ghost", minutes(2)), now=100)
    [reject] = [o for o in bench.poll(now=110) if isinstance(o, Reject)]
    assert (reject.message, reject.reason) == (ghost, Reason.UNKNOWN_SUBMISSION)


def test_unknown_units_and_wrong_topics_are_rejected() -> None:
    bench = Bench.make()
    msg, out = bench.send(SUBS, 0, created("s1", minutes(0), unit="univ.nowhere"), now=0)
    assert [(o.reason, o.message) for o in out if isinstance(o, Reject)] == [
        (Reason.UNKNOWN_UNIT, msg)
    ]
    bench.send(SUBS, 0, created("s2", minutes(0)), now=0)
    referral = event(
        "sada.response.posted",
        "s2",
        minutes(1),
        response_id="r1",
        unit_id=DEPT,
        kind="referral",
        referred_to_unit_id="univ.nowhere",
    )
    msg, out = bench.send(RESPONSES, 0, referral, now=0)
    assert [(o.reason, o.message) for o in out if isinstance(o, Reject)] == [
        (Reason.UNKNOWN_UNIT, msg)
    ]
    msg, out = bench.send(SUBS, 0, vote("s2", minutes(1)), now=0)  # a vote on the wrong topic
    assert [(o.reason, o.message) for o in out if isinstance(o, Reject)] == [
        (Reason.WRONG_TOPIC, msg)
    ]
    bench.poll(now=100)
    assert [ce["data"]["submission_id"] for _, ce in bench.released_events()] == ["s2"]
    bench.assert_each_offer_settled_once()


# -- every message settles exactly once ------------------------------------------------


@st.composite
def traffic(draw: st.DrawFn) -> list[tuple[float, str, int, dict[str, Any]]]:
    """Messages with their wall arrival time: valid, duplicated, orphaned, misrouted."""
    out: list[tuple[float, str, int, dict[str, Any]]] = []
    now = 0.0
    sent: list[tuple[str, int, dict[str, Any]]] = []
    for _ in range(draw(st.integers(1, 40))):
        now += draw(st.sampled_from([0.0, 0.5, 3.0, 12.0]))
        sid = draw(st.sampled_from(["s1", "s2", "s3", "ghost"]))
        time = minutes(draw(st.integers(0, 120)))
        kind = draw(st.sampled_from(["created", "vote", "vote", "response", "again", "astray"]))
        partition = draw(st.integers(0, 1))
        if kind == "again" and sent:
            topic, partition, ce = draw(st.sampled_from(sent))
            out.append((now, topic, partition, ce))
            continue
        if kind == "created" and sid != "ghost":
            unit = draw(st.sampled_from([DEPT, DEPT, "univ.nowhere"]))
            topic, ce = SUBS, created(sid, time, unit=unit)
        elif kind == "response":
            topic = RESPONSES
            ce = event(
                "sada.response.posted", sid, time, response_id="r", unit_id=DEPT, kind="answer"
            )
        else:
            topic, ce = VOTES, vote(sid, time, voter=draw(st.sampled_from("abc")))
            if kind == "astray":
                topic = RESPONSES
        sent.append((topic, partition, ce))
        out.append((now, topic, partition, ce))
    return out


@settings(max_examples=150, deadline=None)
@given(traffic(), st.sampled_from(["event", "wall"]))
def test_every_offered_message_settles_exactly_once_and_the_log_is_ordered(
    messages: list[tuple[float, str, int, dict[str, Any]]], clock_mode: str
) -> None:
    base = T.timestamp()  # wall time starts at minute 0 of the event times
    bench = Bench.make(clock_mode=clock_mode, idle_seconds=5.0, grace_seconds=10.0)
    for now, topic, partition, ce in messages:
        bench.send(topic, partition, ce, now=base + now)
    bench.poll(now=base + messages[-1][0] + 3 * 3600)
    bench.assert_each_offer_settled_once()
    assert bench.ingress.buffered == 0
    # The canonical log: effective instants never go back, events never precede their
    # submission, and an event takes effect at its own time unless late or following.
    ats: list[datetime] = []
    created_at: dict[str, datetime] = {}
    for o in bench.outputs:
        if not isinstance(o, Release):
            continue
        record, logged = decode(o.value)
        ats.append(record.at)
        if isinstance(record, EventRecord):
            assert logged is not None
            sid = record.event.submission_id
            if logged["type"] == "sada.submission.created":
                created_at[sid] = record.at
            assert sid in created_at
            assert record.at >= record.event.time
            if not record.late:
                assert record.at == max(record.event.time, created_at[sid])
    assert ats == sorted(ats)

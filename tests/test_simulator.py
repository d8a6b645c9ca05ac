"""``sada simulate`` and the ``sada run --demo`` feed: repeatable, valid, realistic traffic.

The generated history is replayed through the reference model of the domain
(``domain_oracle``, which shares no code with the pipeline) to show what an
operator would see: responses land at the unit holding the submission, and
both support and overdue escalations happen. Publishing goes to the real
embedded broker.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import domain_oracle as oracle
import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from sada.app import cli
from sada.infra import contracts
from sada.infra.reading import partitions_of
from sada.infra.settings import Settings
from sada.infra.topics import INPUT_TOPICS, ensure_topics
from sada.pipeline.domain.config import load_config
from sada.pipeline.domain.model import parse_time
from sada.producers.events import topic_for
from sada.producers.simulator import run_demo

DEFAULT_START = datetime(2026, 10, 3, 5, 0, tzinfo=UTC)
DEFAULT_DAYS = 14
PERSIAN = re.compile(r"[\u0600-\u06ff]")
CYRILLIC = re.compile(r"[\u0400-\u04ff]")


def simulate(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(["simulate", *args], out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def seed7() -> str:
    code, out, err = simulate("--seed", "7")
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def events(seed7: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in seed7.splitlines()]


def of_type(events: Iterable[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == type_]


def final_stances(events: Iterable[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Each submission's voters and their stance after every vote and retraction."""
    stances: dict[str, dict[str, str]] = defaultdict(dict)
    for e in events:
        d = e["data"]
        if e["type"] == "sada.vote.cast":
            stances[d["submission_id"]][d["voter_id"]] = d["stance"]
        elif e["type"] == "sada.vote.retracted":
            stances[d["submission_id"]].pop(d["voter_id"], None)
    return stances


def replay(
    events: Iterable[dict[str, Any]], clock: datetime
) -> tuple[dict[str, oracle.Submission], list[str]]:
    """Feed the events to the reference model; also list responses it would not take."""
    model = oracle.Model.from_config(load_config())
    subs: dict[str, oracle.Submission] = {}
    misplaced: list[str] = []
    # At one instant a submission's creation comes first, whatever topic it came from.
    ordered = sorted(
        events, key=lambda e: (parse_time(e["time"]), e["type"] != "sada.submission.created")
    )
    for e in ordered:
        d, at, t = e["data"], parse_time(e["time"]), e["type"]
        sid = d["submission_id"]
        ev: oracle.Event
        if t == "sada.submission.created":
            subs[sid] = oracle.Submission(model)
            ev = oracle.Create(e["id"], d["kind"], d["unit_id"])
        elif t == "sada.vote.cast":
            ev = oracle.Vote(e["id"], d["voter_id"], d["stance"])
        elif t == "sada.vote.retracted":
            ev = oracle.Vote(e["id"], d["voter_id"], None)
        elif t == "sada.response.posted":
            subs[sid].run_clock(at)
            out = subs[sid].out
            if out.status != "open" or out.unit != d["unit_id"]:
                misplaced.append(f"{sid}: {d['kind']} from {d['unit_id']}, held by {out.unit}")
            ev = oracle.Respond(e["id"], d["unit_id"], d["kind"], d.get("referred_to_unit_id"))
        elif t == "sada.submission.withdrawn":
            ev = oracle.Withdraw(e["id"])
        else:
            if subs[sid].out.status != "closed":
                misplaced.append(f"{sid}: rated while {subs[sid].out.status}")
            ev = oracle.Rate(e["id"], d["rating"])
        subs[sid].apply(at, ev)
    for sub in subs.values():
        sub.run_clock(clock)
    return subs, misplaced


# -- repeatable output -----------------------------------------------------------------


def test_the_same_seed_gives_the_same_bytes(seed7: str) -> None:
    code, again, _ = simulate("--seed", "7")
    assert code == 0
    assert again == seed7
    assert seed7.endswith("\n") and seed7.count("\n") > 1000


def test_another_seed_gives_other_events(seed7: str) -> None:
    code, other, _ = simulate("--seed", "8")
    assert code == 0
    assert other != seed7
    assert not {json.loads(x)["id"] for x in other.splitlines()} & {
        json.loads(x)["id"] for x in seed7.splitlines()
    }


def test_out_file_holds_the_same_bytes_and_progress_ends_with_a_total(
    tmp_path: Path, seed7: str
) -> None:
    target = tmp_path / "history.ndjson"
    code, out, err = simulate("--seed", "7", "--out", str(target))
    assert code == 0
    assert out == ""
    assert target.read_bytes() == seed7.encode("utf-8")
    last = err.strip().splitlines()[-1]
    assert f"{seed7.count(chr(10))} events" in last


def test_every_line_is_one_compact_sorted_valid_cloudevent(seed7: str) -> None:
    for line in seed7.splitlines():
        event = json.loads(line)
        assert line == json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        contracts.validate_event(event)  # raises on any violation
        assert event["subject"] == event["data"]["submission_id"]


def test_events_are_in_time_order_inside_the_window(events: list[dict[str, Any]]) -> None:
    times = [parse_time(e["time"]) for e in events]
    assert times == sorted(times)
    assert times[0] >= DEFAULT_START
    assert times[-1] <= DEFAULT_START + timedelta(days=DEFAULT_DAYS)
    created: set[str] = set()
    for e in events:
        sid = e["data"]["submission_id"]
        if e["type"] == "sada.submission.created":
            created.add(sid)
        else:
            assert sid in created, f"{e['type']} before its submission"


def test_tracking_codes_and_ids_are_unique(events: list[dict[str, Any]]) -> None:
    created = of_type(events, "sada.submission.created")
    assert len({e["data"]["tracking_code"] for e in created}) == len(created) == 200
    assert len({e["id"] for e in events}) == len(events)


# -- realistic traffic -----------------------------------------------------------------


def test_support_is_heavy_tailed(events: list[dict[str, Any]]) -> None:
    stances = final_stances(events)
    created = of_type(events, "sada.submission.created")
    support = sorted(
        (
            sum(1 for s in stances[e["data"]["submission_id"]].values() if s == "support")
            for e in created
        ),
        reverse=True,
    )
    assert support[0] >= 200, support[:5]
    assert sum(1 for s in support if s >= 50) >= 3, support[:10]
    assert support[len(support) // 2] <= 10, "most submissions get a handful"


def test_voters_change_their_minds_and_retract(events: list[dict[str, Any]]) -> None:
    seen: dict[tuple[str, str], str] = {}
    changes = retractions = 0
    for e in events:
        d = e["data"]
        if e["type"] == "sada.vote.cast":
            key = (d["submission_id"], d["voter_id"])
            if key in seen and seen[key] != d["stance"]:
                changes += 1
            seen[key] = d["stance"]
        elif e["type"] == "sada.vote.retracted":
            assert (d["submission_id"], d["voter_id"]) in seen, "retracts a vote never cast"
            retractions += 1
    assert changes >= 10
    assert retractions >= 10


def test_some_submissions_meet_silence_while_others_are_answered(
    events: list[dict[str, Any]],
) -> None:
    end = DEFAULT_START + timedelta(days=DEFAULT_DAYS)
    answered = {e["data"]["submission_id"] for e in of_type(events, "sada.response.posted")}
    withdrawn = {e["data"]["submission_id"] for e in of_type(events, "sada.submission.withdrawn")}
    old_and_silent = [
        e
        for e in of_type(events, "sada.submission.created")
        if e["data"]["submission_id"] not in answered | withdrawn
        and parse_time(e["time"]) < end - timedelta(days=7)
    ]
    assert len(old_and_silent) >= 5
    kinds = Counter(e["data"]["kind"] for e in of_type(events, "sada.response.posted"))
    assert set(kinds) == {"acknowledgement", "answer", "referral", "resolution", "rejection"}
    for e in of_type(events, "sada.response.posted"):
        if e["data"]["kind"] == "referral":
            assert e["data"]["referred_to_unit_id"] != e["data"]["unit_id"]
    assert of_type(events, "sada.submission.withdrawn")
    ratings = Counter(e["data"]["rating"] for e in of_type(events, "sada.satisfaction.rated"))
    assert len(ratings) >= 3, ratings


def test_responses_come_from_the_holding_unit_and_both_escalation_kinds_follow(
    events: list[dict[str, Any]],
) -> None:
    subs, misplaced = replay(events, DEFAULT_START + timedelta(days=DEFAULT_DAYS))
    assert misplaced == []
    reasons = Counter(x.reason for s in subs.values() for x in s.out.escalations)
    assert reasons["support_threshold"] >= 2
    assert reasons["first_response_overdue"] >= 5


def test_every_channel_kind_and_mostly_leaf_units(events: list[dict[str, Any]]) -> None:
    config = load_config()
    created = [e["data"] for e in of_type(events, "sada.submission.created")]
    assert {d["channel"] for d in created} == {
        "web",
        "telegram",
        "whatsapp",
        "sms",
        "phone",
        "email",
        "in_person",
    }
    assert {d["kind"] for d in created} == {"complaint", "criticism", "suggestion", "question"}
    parents = {u.parent for u in config.units.values()}
    leaves = sum(1 for d in created if d["unit_id"] not in parents)
    assert leaves > len(created) / 2


def test_text_is_persian_russian_and_english_with_the_seed_sentences(
    events: list[dict[str, Any]],
) -> None:
    created = [e["data"] for e in of_type(events, "sada.submission.created")]
    by_lang = Counter(d["language"] for d in created)
    assert by_lang["fa"] > by_lang["ru"] > 0 and by_lang["en"] > 0
    for d in created:
        script = {"fa": PERSIAN, "ru": CYRILLIC}.get(d["language"])
        if script is not None:
            assert script.search(d["title"]) and script.search(d["body"])
    shipped = resources.files("sada.producers.data").joinpath("sentences.json")
    sentences = json.loads(shipped.read_text("utf-8"))["sentences"]
    persian = [s["text"] for s in sentences if s["lang"] == "fa"]
    bodies = [d["body"] for d in created if d["language"] == "fa"]
    assert sum(1 for b in bodies if any(s in b for s in persian)) == len(bodies)
    persian_text = " ".join(bodies + [d["title"] for d in created if d["language"] == "fa"])
    assert "\u200c" in persian_text, "some Persian keeps its zero-width non-joiners"
    assert "ي" in persian_text or "ك" in persian_text, "some Persian has Arabic letters"


# -- the command line ----------------------------------------------------------------


def test_rate_limits_how_fast_events_come_out() -> None:
    began = time.monotonic()
    code, out, _ = simulate("--seed", "3", "--submissions", "3", "--days", "1", "--rate", "200")
    elapsed = time.monotonic() - began
    n = out.count("\n")
    assert code == 0 and n > 20
    assert elapsed >= (n - 1) / 200


def test_start_accepts_dates_and_rejects_instants_without_offset() -> None:
    code, out, _ = simulate("--submissions", "2", "--days", "1", "--start", "1405-07-11")
    assert code == 0
    # 11 Mehr 1405 is 3 October 2026; its midnight in Tehran (+03:30) is 20:30 UTC the day before.
    midnight = datetime(2026, 10, 2, 20, 30, tzinfo=UTC)
    times = [parse_time(json.loads(line)["time"]) for line in out.splitlines()]
    assert midnight <= min(times) and max(times) <= midnight + timedelta(days=1)
    code, out, err = simulate("--start", "2026-10-03T05:00")
    assert code == 1 and out == ""
    assert err.startswith("sada simulate: ") and err.count("\n") == 1 and "offset" in err


def test_publish_without_a_cluster_says_so() -> None:
    code, _, err = simulate("--publish")
    assert code == 1 and "--bootstrap" in err and err.count("\n") == 1


# -- against the broker ----------------------------------------------------------------


async def _input_ends(bootstrap: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in INPUT_TOPICS for p in await partitions_of(consumer, t)]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def _read_since(
    bootstrap: str,
    starts: dict[TopicPartition, int],
    since_ms: int,
    done: Any,
    timeout: float,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Records put on the input topics from ``since_ms`` on, until ``done(records)``.

    ``starts`` are the partitions' ends reported before that instant. Only
    records stamped at or after it are kept: Tansu reports the end of a
    partition as one past the first offset of its last batch, not of its last
    record, so a reported end can lie before records of earlier tests.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        consumer.assign(list(starts))
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout
        while not done(records):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s with {len(records)} records")
            batch = await consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                records.extend(m for m in msgs if m.timestamp >= since_ms)
        return records
    finally:
        await consumer.stop()


@pytest.mark.broker
def test_publish_puts_exactly_the_generated_events_on_the_input_topics(broker: str) -> None:
    args = ["--seed", "11", "--submissions", "25", "--days", "5"]
    code, expected_text, _ = simulate(*args)
    assert code == 0
    expected = [json.loads(line) for line in expected_text.splitlines()]
    ensure_topics(broker, 4)
    starts = asyncio.run(_input_ends(broker))
    since_ms = int(time.time() * 1000)
    code, out, err = simulate(*args, "--publish", "--bootstrap", broker)
    assert code == 0, err
    assert out == ""
    assert f"published {len(expected)} events" in err.strip().splitlines()[-1]
    records = asyncio.run(
        _read_since(broker, starts, since_ms, lambda rs: len(rs) >= len(expected), timeout=60)
    )
    assert len(records) == len(expected)
    assert sorted(json.loads(r.value)["id"] for r in records) == sorted(e["id"] for e in expected)
    by_id = {e["id"]: e for e in expected}
    for r in records:
        event = json.loads(r.value)
        assert event == by_id[event["id"]]
        assert r.topic == topic_for(event)
        assert r.key == event["subject"].encode()
    # One submission's events on one topic keep their order (same key, same partition).
    sent: dict[tuple[str, str], list[str]] = defaultdict(list)
    for e in expected:
        sent[(topic_for(e), e["subject"])].append(e["id"])
    got: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    for r in records:
        got[(r.topic, r.key.decode())].append((r.offset, json.loads(r.value)["id"]))
    assert {k: [i for _, i in sorted(v)] for k, v in got.items()} == dict(sent)


@pytest.mark.broker
def test_demo_backfills_history_then_sends_live_traffic_that_goes_viral(broker: str) -> None:
    config = load_config()
    threshold = config.ladder[0]
    ensure_topics(broker, 4)

    async def scenario() -> tuple[list[dict[str, Any]], datetime, BaseException | None]:
        starts = await _input_ends(broker)
        since_ms = int(time.time() * 1000)
        began = datetime.now(UTC)
        demo = asyncio.create_task(run_demo(Settings(), config, broker, seed=5, pace=10))

        def live_viral(records: list[Any]) -> bool:
            live = [json.loads(r.value) for r in records]
            live = [e for e in live if parse_time(e["time"]) >= began]
            for voters in final_stances(live).values():
                if sum(1 for s in voters.values() if s == "support") >= threshold:
                    return True
            return False

        try:
            records = await _read_since(broker, starts, since_ms, live_viral, timeout=120)
        finally:
            demo.cancel()
            outcome = (await asyncio.gather(demo, return_exceptions=True))[0]
        error = outcome if isinstance(outcome, BaseException) else None
        if isinstance(error, asyncio.CancelledError):
            error = None
        return [json.loads(r.value) for r in records], began, error

    events, began, error = asyncio.run(scenario())
    assert error is None
    for e in events:
        contracts.validate_event(e)
    times = [parse_time(e["time"]) for e in events]
    assert min(times) < began - timedelta(days=5), "a backfill of past days"
    assert max(times) <= datetime.now(UTC) + timedelta(seconds=5)
    live = [t for t in times if t >= began]
    assert live and max(live) - min(live) < timedelta(minutes=2)
    subs, misplaced = replay(events, datetime.now(UTC))
    assert misplaced == []
    reasons = Counter(x.reason for s in subs.values() for x in s.out.escalations)
    assert reasons["support_threshold"] >= 1
    assert reasons["first_response_overdue"] >= 1

"""What integrators publish, through the running pipeline, as they would publish it.

The broker (``sada broker``, or Apache Kafka: each test runs on both) and the
worker (``sada run --bootstrap``) run as separate processes, so the worker can
crash and restart while the broker and its topics live on, as on a real cluster.
Input is written by ordinary Kafka clients (confluent-kafka, kafka-python),
never through Sada's own SDK; the outcome is read from the topics, the
tracking API and ``/metrics``.
"""

from __future__ import annotations

import random
import string
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer as ConfluentProducer
from e2e_support import (
    FAST_TIMERS,
    PARENT_UNIT,
    EventFactory,
    Position,
    RawProducer,
    SadaProcess,
    applied_key_counts,
    clean_env,
    decided,
    ends_of,
    free_port,
    get_json,
    healthz,
    log_events,
    log_key_counts,
    metric_by_label,
    metric_sums,
    read_topic,
    settled,
    start_named_broker,
    start_run,
    wait_for,
    wait_healthy,
)

from sada.infra import topics
from sada.pipeline.domain.logcodec import event_key
from sada.pipeline.domain.reasons import Reason

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@dataclass
class Pipeline:
    """A broker and a worker on it; the worker can be killed and started again."""

    workdir: Path
    bootstrap: str
    http_port: int
    worker: SadaProcess
    starts: int = 1

    def restart(self) -> None:
        self.worker.close()
        self.starts += 1
        self.worker = _start_worker(self.workdir, self.bootstrap, self.http_port, self.starts)
        wait_healthy(self.worker, self.http_port)


def _start_worker(workdir: Path, bootstrap: str, port: int, n: int) -> SadaProcess:
    return start_run(
        workdir,
        workdir / "data",
        port,
        name=f"sada-run-{n}",
        bootstrap=bootstrap,
        env=clean_env(SADA_CLOCK="event", **FAST_TIMERS),
    )


@pytest.fixture
def pipeline(broker_kind: str, tmp_path: Path) -> Iterator[Pipeline]:
    broker, bootstrap = start_named_broker(broker_kind, tmp_path)
    try:
        port = free_port()
        running = Pipeline(tmp_path, bootstrap, port, _start_worker(tmp_path, bootstrap, port, 1))
        try:
            health = wait_healthy(running.worker, port)
            assert health["broker"] == {"bootstrap": bootstrap, "embedded": False}
            yield running
        finally:
            running.worker.close()
    finally:
        broker.close()


def _wait_settled(p: Pipeline, positions: list[Position], timeout: float = 60) -> None:
    ends = ends_of(positions)
    wait_for(
        lambda: settled(p.bootstrap, ends),
        timeout,
        "ingress to settle every input",
        watch=p.worker,
        interval=0.3,
    )
    wait_for(
        lambda: decided(p.http_port),
        timeout,
        "the projector to decide and publish everything",
        watch=p.worker,
        interval=0.3,
    )


# --- 4. any Kafka client --------------------------------------------------------------


@pytest.mark.timeout(120)
def test_event_written_by_hand_with_confluent_kafka_reaches_the_canonical_log(
    pipeline: Pipeline,
) -> None:
    submission_id = f"sub-callcentre-{uuid.uuid4().hex[:12]}"
    event_id = f"cc-{uuid.uuid4()}"
    value = string.Template(
        '{"specversion":"1.0","id":"$event_id","source":"/integrations/call-centre",'
        '"type":"sada.submission.created","time":"2025-06-01T09:15:00+03:30",'
        '"subject":"$submission_id","datacontenttype":"application/json",'
        '"data":{"submission_id":"$submission_id","tracking_code":"7816838211",'
        '"kind":"complaint","title":"صف طولانی داروخانه","body":"صف داروخانهٔ بیمارستان '
        'هر روز از ساعت ۸ تا ۱۱ طول می‌کشد.","language":"fa","channel":"phone",'
        '"unit_id":"univ.vc-treatment","author":{"id":"staff-0077","role":"staff"},'
        '"anonymous":true}}'
    ).substitute(event_id=event_id, submission_id=submission_id)
    delivered: list[Any] = []
    producer = ConfluentProducer({"bootstrap.servers": pipeline.bootstrap, "acks": "all"})
    producer.produce(
        topics.SUBMISSIONS,
        key=submission_id.encode(),
        value=value.encode("utf-8"),
        on_delivery=lambda err, msg: delivered.append(err),
    )
    assert producer.flush(30) == 0
    assert delivered == [None]
    del producer  # it would go on trying to reach the broker after the test

    def logged() -> dict[str, Any] | None:
        found = [
            ce
            for ce in log_events(pipeline.bootstrap)
            if (ce["source"], ce["id"]) == ("/integrations/call-centre", event_id)
        ]
        return found[0] if found else None

    def rejected() -> str:
        return repr([r.headers for r in read_topic(pipeline.bootstrap, topics.DLQ)])

    try:
        ce = wait_for(logged, 30, "the event in sada.log", watch=pipeline.worker, interval=0.3)
    except AssertionError as e:
        raise AssertionError(f"{e}\nsada.dlq holds: {rejected()}") from None
    # As received, but for the person id: a pseudonym before anything lasts.
    sent = orjson.loads(value)
    assert ce["data"]["author"]["id"].startswith("p:")
    assert ce["data"]["author"]["id"] != sent["data"]["author"]["id"]
    sent["data"]["author"]["id"] = ce["data"]["author"]["id"]
    assert ce == sent
    # And its author can follow it up, typing the code in Persian digits.
    answer = wait_for(
        lambda: _found(get_json(pipeline.http_port, "/api/v1/submissions/۷۸۱۶۸۳۸۲۱۱")),
        30,
        "the submission in the tracking API",
        watch=pipeline.worker,
    )
    assert answer["submission_id"] == submission_id
    assert answer["unit_id"] == "univ.vc-treatment"
    assert answer["status"] == "open"


def _found(answer: tuple[int, Any] | None) -> dict[str, Any] | None:
    if answer is None or answer[0] != 200:
        return None
    body: dict[str, Any] = answer[1]
    return body


# --- 5. a mixed file, published twice ---------------------------------------------------


@dataclass(frozen=True, eq=False)  # each message is itself, even when two carry equal bytes
class Item:
    """One message of the mixed file: where it goes and what ingress must make of it."""

    topic: str
    key: bytes | None
    value: bytes | None
    reason: str | None  # None: a good event
    event_key: str | None  # source + id, when ingress can read them (never above the size limit)


def _good(topic: str, event: dict[str, Any]) -> Item:
    return Item(
        topic,
        event["data"]["submission_id"].encode(),
        orjson.dumps(event),
        None,
        event_key(event),
    )


def _bad(
    topic: str, event: dict[str, Any] | bytes | None, reason: Reason, key: bytes | None = None
) -> Item:
    if event is None or isinstance(event, bytes):
        return Item(topic, key, event, reason.value, None)
    readable = reason is not Reason.TOO_LARGE
    return Item(
        topic,
        str(event["subject"]).encode(),
        orjson.dumps(event),
        reason.value,
        event_key(event) if readable else None,
    )


def _mixed_file(factory: EventFactory, rng: random.Random) -> list[Item]:
    """1,000 messages: 900 good (submissions, votes, responses) and 100 bad of seven kinds."""
    base = datetime(2025, 6, 1, 5, 0, tzinfo=UTC)
    subs = [factory.submission(base + timedelta(seconds=10 * i)) for i in range(150)]

    def after(sub: dict[str, Any], seconds: float) -> datetime:
        return datetime.fromisoformat(sub["time"]) + timedelta(seconds=seconds)

    votes = []
    for n in range(700):
        sub = subs[n % len(subs)]
        stance = "oppose" if n % 7 == 0 else "support"
        votes.append(factory.vote(sub["subject"], f"voter-{n}", stance, after(sub, 1 + n % 50)))
    acks = [factory.acknowledgement(sub["subject"], time=after(sub, 60)) for sub in subs[:50]]
    good = [_good(topics.VOTES, v) for v in votes] + [_good(topics.RESPONSES, a) for a in acks]

    bad: list[Item] = []
    inputs = topics.INPUT_TOPICS
    for i in range(15):  # not JSON: cut short, prose, broken UTF-8, empty, no value at all
        whole = orjson.dumps(factory.vote(subs[i]["subject"], f"cut-{i}", time=after(subs[i], 2)))
        raw: list[bytes | None] = [
            whole[: len(whole) // 2],
            f"vote {i}: support for {subs[i]['subject']}".encode(),
            b"\xff\xfe{" + str(i).encode(),
            b"",
            None,
        ]
        key = subs[i]["subject"].encode()  # a message needs a key when it has no value
        bad.append(_bad(inputs[i % 3], raw[i % len(raw)], Reason.INVALID_JSON, key))
    for i in range(15):  # valid events on a topic that does not carry their type
        sub = subs[20 + i]
        wrong = [
            (topics.SUBMISSIONS, factory.vote(sub["subject"], f"lost-{i}", time=after(sub, 3))),
            (topics.VOTES, factory.acknowledgement(sub["subject"], time=after(sub, 3))),
            (topics.RESPONSES, factory.submission(after(sub, 3))),
        ][i % 3]
        bad.append(_bad(wrong[0], wrong[1], Reason.WRONG_TOPIC))
    for i in range(15):  # each breaks its data schema
        sub = subs[40 + i]
        if i % 3 == 0:
            event = factory.vote(sub["subject"], f"unsure-{i}", time=after(sub, 4))
            event["data"]["stance"] = "maybe"
            topic = topics.VOTES
        elif i % 3 == 1:
            event = factory.submission(after(sub, 4))
            event["data"]["kind"] = "rant"
            topic = topics.SUBMISSIONS
        else:
            event = factory.acknowledgement(sub["subject"], time=after(sub, 4))
            event["data"]["kind"] = "thanks"
            topic = topics.RESPONSES
        bad.append(_bad(topic, event, Reason.SCHEMA_VIOLATION))
    for i in range(15):  # addressed to a unit the organisation does not have
        event = factory.submission(base + timedelta(seconds=7 * i + 3), unit=f"univ.nowhere-{i}")
        bad.append(_bad(topics.SUBMISSIONS, event, Reason.UNKNOWN_UNIT))
    for i in range(15):  # a mistyped tracking code: the check digit gives it away
        event = factory.submission(base + timedelta(seconds=7 * i + 4))
        code = event["data"]["tracking_code"]
        event["data"]["tracking_code"] = code[:-1] + str((int(code[-1]) + 1 + i % 9) % 10)
        bad.append(_bad(topics.SUBMISSIONS, event, Reason.INVALID_TRACKING_CODE))
    for i in range(15):  # votes for a submission that never comes
        event = factory.vote(f"sub-never-{i}", f"voter-{i}", time=base + timedelta(seconds=i))
        bad.append(_bad(topics.VOTES, event, Reason.UNKNOWN_SUBMISSION))
    for i in range(10):  # larger than any event may be
        event = factory.submission(base + timedelta(seconds=7 * i + 5))
        event["data"]["body"] = "ب" * 40_000
        bad.append(_bad(topics.SUBMISSIONS, event, Reason.TOO_LARGE))

    rest = good + bad
    rng.shuffle(rest)
    # Submissions first, as an integrator's outbox would hold them; the rest mixed.
    return [_good(topics.SUBMISSIONS, s) for s in subs] + rest


@pytest.mark.timeout(180)
def test_mixed_file_published_twice_every_message_accounted_for_exactly_once(
    pipeline: Pipeline,
) -> None:
    items = _mixed_file(EventFactory(seed=5), random.Random(5))
    good = [it for it in items if it.reason is None]
    bad = [it for it in items if it.reason is not None]
    assert (len(items), len(good)) == (1000, 900)
    assert {it.reason for it in bad} == {
        "invalid_json",
        "wrong_topic",
        "schema_violation",
        "unknown_unit",
        "invalid_tracking_code",
        "unknown_submission",
        "too_large",
    }

    producer = RawProducer(pipeline.bootstrap)
    published: dict[Position, Item] = {}
    for _copy in range(2):
        for it in items:
            producer.send(it.topic, it.value, it.key)
        positions = producer.flush()
        published.update(zip(positions, items, strict=True))
        # The copy is a redelivery after the first was fully handled, as when an
        # integrator replays its outbox after a crash.
        _wait_settled(pipeline, positions)
    producer.close()

    # sada.dlq: every rejected message, unchanged, with its reason, once per message.
    dlq = read_topic(pipeline.bootstrap, topics.DLQ)
    rejected_at: Counter[Position] = Counter()
    for rec in dlq:
        h = rec.headers
        position = (h["sada.topic"], int(h["sada.partition"]), int(h["sada.offset"]))
        rejected_at[position] += 1
        item = published.get(position)
        assert item is not None, f"sada.dlq names an input nobody published: {h}"
        assert item.reason is not None, f"a good event was rejected: {h} {item.value!r}"
        assert h["sada.reason"] == item.reason, (h, item.value[:200] if item.value else None)
        assert h["sada.detail"], h
        assert rec.value == item.value  # unchanged, byte for byte
        assert rec.key == item.key
    assert max(rejected_at.values()) == 1, "an input was rejected more than once"

    # A redelivered event (same source and id) is absorbed, not rejected again; a
    # message with no readable identity is judged afresh each time it comes.
    copies_rejected = Counter(published[pos] for pos in rejected_at)
    for it in bad:
        expected = 1 if it.event_key is not None else 2
        shown = it.value[:80] if it.value else it.value
        assert copies_rejected[it] == expected, (it.reason, it.event_key, shown)

    # Every good event took effect exactly once, nothing else did (the projector's ledger).
    logged = applied_key_counts(pipeline.workdir / "data" / "sada.db")
    assert logged == Counter({it.event_key: 1 for it in good})

    # Every distinct event ended up accepted or rejected, never both, never neither.
    accepted_items = {it for it in items if it.event_key in logged}
    rejected_items = set(copies_rejected)
    assert accepted_items.isdisjoint(rejected_items)
    assert len(accepted_items) + len(rejected_items) == len(items)

    # /metrics says the same.
    sums = metric_sums(pipeline.http_port)
    rejected_total = sum(rejected_at.values())
    assert sums.get("sada_events_accepted_total", 0) == len(good)
    assert sums.get("sada_events_rejected_total", 0) == rejected_total
    assert sums.get("sada_dlq_records_total", 0) == rejected_total
    duplicates = 2 * len(items) - len(good) - rejected_total
    assert sums.get("sada_events_duplicate_total", 0) == duplicates
    by_reason = metric_by_label(pipeline.http_port, "sada_events_rejected_total", "reason")
    dlq_reasons = Counter(rec.headers["sada.reason"] for rec in dlq)
    assert {r: n for r, n in by_reason.items() if n} == dict(dlq_reasons)


# --- 6. a crash mid-stream --------------------------------------------------------------


@pytest.mark.timeout(240)
def test_worker_killed_mid_stream_and_restarted_logs_every_event_exactly_once(
    pipeline: Pipeline,
) -> None:
    factory = EventFactory(seed=6)
    rng = random.Random(6)
    base = datetime(2025, 6, 2, 5, 0, tzinfo=UTC)
    subs = [factory.submission(base + timedelta(seconds=2 * i)) for i in range(500)]
    popular = subs[0]
    stream: list[tuple[str, dict[str, Any]]] = [(topics.SUBMISSIONS, s) for s in subs]
    support: Counter[str] = Counter()
    oppose: Counter[str] = Counter()
    for n in range(4500):
        sub = popular if n < 60 else subs[rng.randrange(len(subs))]
        stance = "support" if n < 60 or rng.random() < 0.8 else "oppose"
        when = datetime.fromisoformat(sub["time"]) + timedelta(seconds=rng.uniform(1, 600))
        stream.append((topics.VOTES, factory.vote(sub["subject"], f"voter-{n}", stance, when)))
        (support if stance == "support" else oppose)[sub["data"]["tracking_code"]] += 1
    stream.sort(key=lambda te: datetime.fromisoformat(te[1]["time"]))
    keys = Counter(event_key(e) for _, e in stream)
    assert len(keys) == len(stream) == 5000

    positions: list[Position] = []
    half_sent = threading.Event()
    failures: list[BaseException] = []

    def publish() -> None:
        try:
            producer = RawProducer(pipeline.bootstrap)
            for start in range(0, len(stream), 250):
                for topic, event in stream[start : start + 250]:
                    producer.send(topic, orjson.dumps(event), event["subject"].encode())
                positions.extend(producer.flush())
                if start >= len(stream) // 2:
                    half_sent.set()
            producer.close()
        except BaseException as e:
            failures.append(e)
            half_sent.set()

    publisher = threading.Thread(target=publish, name="publisher")
    publisher.start()
    try:
        assert half_sent.wait(60), "publishing stalled"
        wait_for(
            lambda: (
                (healthz(pipeline.http_port) or {})
                .get("workers", {})
                .get("ingress", {})
                .get("accepted", 0)
                >= 1000
            ),
            60,
            "the worker to be well into the stream",
            watch=pipeline.worker,
            interval=0.02,
        )
        pipeline.worker.kill()
        logged_at_kill = applied_key_counts(pipeline.workdir / "data" / "sada.db")
    finally:
        publisher.join(120)
    assert not failures, failures
    assert not publisher.is_alive()
    assert len(positions) == len(stream)
    # The crash came mid-stream: work had been done (how much of it is the machine's
    # speed; the projector applies a forwarded backlog in a few fetches).
    assert sum(logged_at_kill.values()) > 0

    pipeline.restart()
    _wait_settled(pipeline, positions, timeout=120)

    # The log may hold a re-read event twice; each took effect once (the ledger).
    logged = applied_key_counts(pipeline.workdir / "data" / "sada.db")
    assert set(logged) == set(keys), "events lost"
    assert set(log_key_counts(pipeline.bootstrap)) == set(keys)
    assert read_topic(pipeline.bootstrap, topics.DLQ) == []

    # The read model counted each vote once too.
    def counted() -> list[dict[str, Any]] | None:
        shown = []
        for sub in subs:
            code = sub["data"]["tracking_code"]
            answer = _found(get_json(pipeline.http_port, f"/api/v1/submissions/{code}"))
            if answer is None or (answer["support"], answer["oppose"]) != (
                support[code],
                oppose[code],
            ):
                return None
            shown.append(answer)
        return shown

    shown = wait_for(counted, 60, "the tracking API to count every vote", watch=pipeline.worker)
    top = shown[0]
    assert top["tracking_code"] == popular["data"]["tracking_code"]
    assert [(e["reason"], e["to_unit_id"]) for e in top["escalations"]] == [
        ("support_threshold", PARENT_UNIT)
    ]

"""The integrator SDK, pseudonyms and ``sada publish``, against the real embedded broker.

What an integrator relies on: an event published is on the input topic of its
type, keyed by its submission id, as the compact JSON of the event; a bad
event raises before anything is sent; ``sada publish`` sends the good lines of
a file, reports the bad ones by line and reason, and says so in its exit
status; ``--raw`` puts lines on the topics exactly as written.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from sada.app import cli
from sada.infra import contracts, topics
from sada.infra.reading import partitions_of
from sada.pipeline.domain.errors import BrokerError, EventRejectedError
from sada.pipeline.domain.reasons import Reason
from sada.pipeline.domain.tracking import is_valid_tracking_code, new_tracking_code
from sada.producers.events import build_event
from sada.producers.privacy import Pseudonymizer, is_pseudonym
from sada.producers.sdk import SadaProducer, complete_event, encode_event

pytestmark = pytest.mark.broker

SOURCE = "/integrations/sdk-test"
ROOT = Path(__file__).resolve().parent.parent


# -- reading the topics ------------------------------------------------------------
#
# Reading stops on a condition over what has been read, never at the end
# offsets the broker reports: Tansu reports the end of a partition whose last
# batch holds several records as that batch's base offset + 1.


async def _scan(
    bootstrap: str, topic: str, done: Callable[[list[Any]], bool], timeout: float
) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while not done(records):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: the awaited records did not arrive in {timeout}s")
            for msgs in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(msgs)
        return records
    finally:
        await consumer.stop()


def scan(
    bootstrap: str, topic: str, done: Callable[[list[Any]], bool], timeout: float = 20.0
) -> list[Any]:
    """The records of ``topic`` from its beginning, read until ``done`` holds of them."""
    return asyncio.run(_scan(bootstrap, topic, done, timeout))


def event_ids(records: list[Any]) -> dict[str, Any]:
    """``id -> record`` of the records that are JSON objects with a string ``id``."""
    found = {}
    for r in records:
        value = _event_of(r)
        if value is not None and isinstance(value.get("id"), str):
            found[value["id"]] = r
    return found


def _event_of(record: Any) -> dict[str, Any] | None:
    try:
        value = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def events_by_id(bootstrap: str, topic: str, *ids: str) -> dict[str, tuple[bytes, dict[str, Any]]]:
    """``id -> (key, event)`` of the events ``ids``, waiting until all are on ``topic``."""
    records = scan(bootstrap, topic, lambda rs: set(ids) <= event_ids(rs).keys())
    found = event_ids(records)
    return {i: (found[i].key, orjson.loads(found[i].value)) for i in ids}


def ids_before(bootstrap: str, topic: str, marker: str) -> set[str]:
    """Event ids on ``topic`` once ``marker`` is there.

    Whatever was sent before the marker with the same key (same partition)
    is among them, so an id missing here was never sent.
    """
    return set(event_ids(scan(bootstrap, topic, lambda rs: marker in event_ids(rs))))


def values_on(bootstrap: str, topic: str, *values: bytes) -> list[Any]:
    """The records whose value is one of ``values``, waiting until each is there."""
    wanted = set(values)
    records = scan(bootstrap, topic, lambda rs: wanted <= {r.value for r in rs})
    return [r for r in records if r.value in wanted]


# -- fixtures and events ---------------------------------------------------------


@pytest.fixture(scope="module")
def kafka(any_broker: str) -> str:
    topics.ensure_topics(any_broker, 4)
    return any_broker


@pytest.fixture
def producer(kafka: str) -> Iterator[SadaProducer]:
    with SadaProducer(kafka, source=SOURCE) as p:
        yield p


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def submission(sid: str | None = None, author: str = "stu-8842", **fields: Any) -> dict[str, Any]:
    data = {
        "submission_id": sid or new_id("sub"),
        "tracking_code": new_tracking_code(),
        "kind": "complaint",
        "title": "صف طولانی سلف دانشگاه",
        "body": "صف ناهار در سلف مرکزی بیش از چهل دقیقه طول می‌کشد.",
        "language": "fa",
        "channel": "telegram",
        "unit_id": "univ",
        "author": {"id": author, "role": "student"},
        "anonymous": False,
        **fields,
    }
    return build_event("sada.submission.created", data, source=SOURCE, event_id=new_id("ev"))


def vote(sid: str, voter: str = "stu-1107", stance: str = "support") -> dict[str, Any]:
    data = {"submission_id": sid, "voter_id": voter, "stance": stance}
    return build_event("sada.vote.cast", data, source=SOURCE, event_id=new_id("ev"))


def withdrawal(sid: str) -> dict[str, Any]:
    return build_event(
        "sada.submission.withdrawn", {"submission_id": sid}, source=SOURCE, event_id=new_id("ev")
    )


# -- the SDK -------------------------------------------------------------------------


def test_published_event_is_on_its_topic_keyed_by_submission(
    kafka: str, producer: SadaProducer
) -> None:
    created = submission()
    cast = vote(created["subject"])
    producer.publish(created)
    producer.publish(cast)
    producer.flush()

    on_submissions = events_by_id(kafka, topics.SUBMISSIONS, created["id"])
    on_votes = events_by_id(kafka, topics.VOTES, cast["id"])
    key, value = on_submissions[created["id"]]
    assert key == created["subject"].encode()
    assert value == created
    key, value = on_votes[cast["id"]]
    assert key == created["subject"].encode()
    assert value == cast


def test_value_is_compact_json_shared_by_every_producer(kafka: str, producer: SadaProducer) -> None:
    created = submission()
    producer.publish(created)
    producer.flush()
    record = event_ids(scan(kafka, topics.SUBMISSIONS, lambda rs: created["id"] in event_ids(rs)))[
        created["id"]
    ]
    topic, key, value = encode_event(created)
    assert (topic, record.key, record.value) == (topics.SUBMISSIONS, key, value)
    assert b"\n" not in record.value and b": " not in record.value


def test_convenience_methods_publish_valid_events_of_each_type(
    kafka: str, producer: SadaProducer
) -> None:
    created = producer.submit(
        unit_id="univ",
        title="Library hours",
        body="Open the library on Thursdays.",
        author_id="stu-1",
        kind="suggestion",
        channel="web",
        language="en",
    )
    sid = created["data"]["submission_id"]
    sent = [
        created,
        producer.vote(sid, "stu-2"),
        producer.vote(sid, "stu-3", "oppose"),
        producer.retract(sid, "stu-3"),
        producer.respond(sid, "univ", "answer", "The library will open on Thursdays."),
        producer.rate(sid, 4, comment="quick"),
        producer.withdraw(sid, reason="resolved"),
    ]
    producer.flush()
    assert is_valid_tracking_code(created["data"]["tracking_code"])
    for event in sent:
        topic = contracts.TOPIC_OF_TYPE[event["type"]]
        found = events_by_id(kafka, topic, event["id"])
        key, value = found[event["id"]]
        assert key == sid.encode()
        contracts.validate_event(value)
        assert value == event


def test_invalid_event_raises_and_nothing_is_sent(kafka: str, producer: SadaProducer) -> None:
    sid = new_id("sub")
    bad = vote(sid)
    bad["data"]["stance"] = "maybe"
    with pytest.raises(EventRejectedError) as raised:
        producer.publish(bad)
    assert raised.value.reason == Reason.SCHEMA_VIOLATION
    assert "stance" in raised.value.detail

    # A later event of the same submission shares the partition: once it is
    # there, anything sent before it would be there too.
    marker = vote(sid, voter="stu-9")
    producer.publish(marker)
    producer.flush()
    assert bad["id"] not in ids_before(kafka, topics.VOTES, marker["id"])


def test_escalations_are_not_published_by_integrators(producer: SadaProducer) -> None:
    data = {
        "submission_id": new_id("sub"),
        "from_level": 0,
        "to_level": 1,
        "from_unit_id": "univ.a",
        "to_unit_id": "univ",
        "reason": "support_threshold",
        "support": 50,
    }
    event = build_event("sada.submission.escalated", data, source=SOURCE)
    with pytest.raises(EventRejectedError) as raised:
        producer.publish(event)
    assert raised.value.reason == Reason.FORBIDDEN


def test_oversized_event_is_rejected_before_sending(kafka: str) -> None:
    with SadaProducer(kafka, source=SOURCE, max_event_bytes=2048) as small:
        event = submission(body="متن " * 1000)
        with pytest.raises(EventRejectedError) as raised:
            small.publish(event)
    assert raised.value.reason == Reason.TOO_LARGE


def test_publish_raw_sends_bytes_unchanged(kafka: str, producer: SadaProducer) -> None:
    nonce = uuid.uuid4().hex
    value = b'{"not": "an event", "nonce": "' + nonce.encode() + b'"'
    producer.publish_raw(topics.SUBMISSIONS, value, key=b"raw-key")
    producer.flush()
    [record] = values_on(kafka, topics.SUBMISSIONS, value)
    assert record.key == b"raw-key"


def test_context_manager_delivers_before_exit(kafka: str) -> None:
    events = [submission() for _ in range(20)]
    with SadaProducer(kafka, source=SOURCE, linger_ms=1000) as p:
        for e in events:
            p.publish(e)
    # Read after the producer is gone: only what it delivered before exiting is there.
    assert len(events_by_id(kafka, topics.SUBMISSIONS, *(e["id"] for e in events))) == 20


def test_unreachable_broker_is_a_broker_error(free_port: int) -> None:
    with pytest.raises(BrokerError) as raised:
        SadaProducer(f"127.0.0.1:{free_port}", bootstrap_timeout_ms=1000)
    assert f"127.0.0.1:{free_port}" in str(raised.value)


def test_pseudonymised_publication(kafka: str) -> None:
    ids = Pseudonymizer(b"a secret of the organisation")
    with SadaProducer(kafka, source=SOURCE, pseudonymizer=ids) as p:
        first = submission(author="98123456")
        second = submission(author="98123456")
        other = submission(author="98123457")
        cast = vote(first["subject"], voter="98123456")
        for e in (first, second, other, cast):
            p.publish(e)
    found = events_by_id(kafka, topics.SUBMISSIONS, first["id"], second["id"], other["id"])
    authors = [found[e["id"]][1]["data"]["author"]["id"] for e in (first, second, other)]
    voter = events_by_id(kafka, topics.VOTES, cast["id"])[cast["id"]][1]["data"]["voter_id"]
    assert "98123456" not in authors[0] and "98123456" not in voter
    assert authors[0] == authors[1] == voter  # one person, one pseudonym
    assert authors[2] != authors[0]
    for _, value in found.values():
        contracts.validate_event(value)


# -- pseudonyms --------------------------------------------------------------------


def test_pseudonyms_are_stable_keyed_and_idempotent() -> None:
    a, b = Pseudonymizer(b"key one"), Pseudonymizer(b"key two")
    p = a.pseudonym("stu-8842")
    assert is_pseudonym(p) and "8842" not in p
    assert a.pseudonym("stu-8842") == p
    assert b.pseudonym("stu-8842") != p
    assert a.pseudonym("stu-8843") != p
    assert a.pseudonym(p) == p and b.pseudonym(p) == p
    event = vote("sub-1", voter="stu-8842")
    once = a.apply(event)
    assert a.apply(once) == once
    assert event["data"]["voter_id"] == "stu-8842"  # the original is not changed
    contracts.validate_event(once)
    with pytest.raises(ValueError):
        Pseudonymizer(b"")


# -- completing partial events ---------------------------------------------------------


def test_complete_event_fills_only_what_is_absent() -> None:
    partial = {
        "type": "sada.vote.cast",
        "id": "keep-me",
        "data": {"submission_id": "s-1", "voter_id": "v-1", "stance": "support"},
    }
    event = complete_event(partial, source="/integrations/cli")
    contracts.validate_event(event)
    assert event["id"] == "keep-me"
    assert event["source"] == "/integrations/cli"
    assert event["subject"] == "s-1"
    assert event["dataschema"] == contracts.schema_id("sada.vote.cast")
    given = complete_event({**partial, "source": "/integrations/own"}, source="/other")
    assert given["source"] == "/integrations/own"
    data = {
        k: v for k, v in submission()["data"].items() if k not in ("submission_id", "tracking_code")
    }
    created = complete_event({"type": "sada.submission.created", "data": data}, source=SOURCE)
    contracts.validate_event(created)
    assert created["subject"] == created["data"]["submission_id"]
    assert is_valid_tracking_code(created["data"]["tracking_code"])


# -- sada publish ----------------------------------------------------------------------


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def ndjson(*items: dict[str, Any] | bytes) -> bytes:
    return b"".join((i if isinstance(i, bytes) else orjson.dumps(i)) + b"\n" for i in items)


def test_publish_sends_good_lines_and_reports_bad_ones(
    kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SADA_PSEUDONYM_KEY", raising=False)
    sid = new_id("sub")
    created = submission(sid)
    partial_vote = {
        "type": "sada.vote.cast",
        "id": new_id("ev"),
        "data": {"submission_id": sid, "voter_id": "stu-5", "stance": "support"},
    }
    bad_stance = vote(sid)
    bad_stance["data"]["stance"] = "maybe"
    mismatched = vote(sid)
    mismatched["subject"] = "another-submission"
    last = vote(sid, voter="stu-6")  # after the bad votes, on their partition
    path = tmp_path / "events.ndjson"
    path.write_bytes(ndjson(created, partial_vote, bad_stance, b"{not json", b"", mismatched, last))

    code, out, err = run_cli("publish", str(path), "--bootstrap", kafka, "--source", SOURCE)

    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "sent 3, rejected 3"
    assert sorted(lines[1:]) == [
        "  invalid_json: 1",
        "  schema_violation: 1",
        "  subject_mismatch: 1",
    ]
    assert "line 3: schema_violation" in err
    assert "line 4: invalid_json" in err
    assert "line 6: subject_mismatch" in err
    found = events_by_id(kafka, topics.VOTES, partial_vote["id"], last["id"])
    assert set(found) == {partial_vote["id"], last["id"]}
    completed = found[partial_vote["id"]][1]
    contracts.validate_event(completed)
    assert completed["source"] == SOURCE
    assert events_by_id(kafka, topics.SUBMISSIONS, created["id"])[created["id"]][1] == created
    sent_votes = ids_before(kafka, topics.VOTES, last["id"])
    assert bad_stance["id"] not in sent_votes and mismatched["id"] not in sent_votes


def test_publish_all_good_exits_zero(kafka: str, tmp_path: Path) -> None:
    events = [submission() for _ in range(3)]
    path = tmp_path / "good.ndjson"
    path.write_bytes(ndjson(*events))
    code, out, _ = run_cli("publish", str(path), "--bootstrap", kafka)
    assert (code, out) == (0, "sent 3, rejected 0\n")
    assert len(events_by_id(kafka, topics.SUBMISSIONS, *(e["id"] for e in events))) == 3


def test_publish_raw_sends_every_line_unchanged(kafka: str, tmp_path: Path) -> None:
    nonce = uuid.uuid4().hex
    bad_vote = vote(new_id("sub"))
    bad_vote["data"]["stance"] = "maybe"
    lines = [
        orjson.dumps(bad_vote),  # schema violation, on its type's topic
        b'{"type": "sada.vote.cast", "nonce": "' + nonce.encode() + b'"}',  # no data at all
        b'{"truncated": "' + nonce.encode() + b'"',  # not JSON: to --topic
        b'["' + nonce.encode() + b'"]',  # not an object: to --topic
    ]
    path = tmp_path / "raw.ndjson"
    path.write_bytes(b"\r\n".join(lines) + b"\n")

    code, out, _ = run_cli(
        "publish", str(path), "--bootstrap", kafka, "--raw", "--topic", topics.RESPONSES
    )

    assert (code, out) == (0, "sent 4, rejected 0\n")
    on_votes = {r.value: r.key for r in values_on(kafka, topics.VOTES, *lines[:2])}
    assert on_votes[lines[0]] == bad_vote["subject"].encode()
    assert {r.value for r in values_on(kafka, topics.RESPONSES, *lines[2:])} == set(lines[2:])


def test_publish_reads_stdin(kafka: str) -> None:
    sid = new_id("sub")
    created = submission(sid)
    partial = {
        "type": "sada.vote.cast",
        "data": {"submission_id": sid, "voter_id": "stu-7", "stance": "oppose"},
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("SADA_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sada.app.cli",
            "publish",
            "-",
            "--bootstrap",
            kafka,
            "--source",
            SOURCE,
        ],
        input=ndjson(created, partial),
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == "sent 2, rejected 0\n"
    assert created["id"] in events_by_id(kafka, topics.SUBMISSIONS, created["id"])

    def of_submission(records: list[Any]) -> list[dict[str, Any]]:
        return [e for e in map(_event_of, records) if e and e.get("subject") == sid]

    [completed] = of_submission(scan(kafka, topics.VOTES, of_submission))
    contracts.validate_event(completed)
    assert completed["source"] == SOURCE
    assert completed["data"] == partial["data"]


def test_publish_pseudonymises_with_a_key(
    kafka: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SADA_PSEUDONYM_KEY", "organisation secret")
    created = submission(author="98120001")
    path = tmp_path / "one.ndjson"
    path.write_bytes(ndjson(created))
    code, _, _ = run_cli("publish", str(path), "--bootstrap", kafka)
    assert code == 0
    value = events_by_id(kafka, topics.SUBMISSIONS, created["id"])[created["id"]][1]
    assert is_pseudonym(value["data"]["author"]["id"])
    assert "98120001" not in orjson.dumps(value).decode()


def test_publish_without_bootstrap_or_file_fails_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SADA_KAFKA_BOOTSTRAP", raising=False)
    path = tmp_path / "x.ndjson"
    path.write_bytes(b"")
    code, _, err = run_cli("publish", str(path))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "bootstrap" in err
    code, _, err = run_cli("publish", str(tmp_path / "absent.ndjson"), "--bootstrap", "127.0.0.1:1")
    assert code == 1 and "absent.ndjson" in err and len(err.strip().splitlines()) == 1

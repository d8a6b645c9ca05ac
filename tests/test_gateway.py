"""``POST /api/v1/events`` over real HTTP, publishing to the real embedded broker.

The gateway runs in Sada's own aiohttp application (:func:`sada.infra.http.build_app`)
on a free port, in a thread with its own event loop; requests are plain
``http.client`` requests, as any integrator's client sends them. What it
accepts must be on the input topics; what it refuses must not be; every
refusal has its documented status and reason; no body, however broken, gets
a 500.

The gateway runs here without a store, so it tells duplicates and pending
events by what it published itself (the answers with a store, and how they
end, are in ``test_gateway_outcomes.py``).
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import hashlib
import http.client
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import hypothesis
import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sada.infra import contracts, topics
from sada.infra.gateway_metrics import GatewayMetrics
from sada.infra.http import build_app
from sada.infra.reading import partitions_of
from sada.infra.settings import Settings
from sada.pipeline.domain.config import Config, parse_config
from sada.pipeline.domain.tracking import new_tracking_code
from sada.producers.events import build_event
from sada.producers.gateway import MAX_BATCH, MAX_BODY_BYTES, routes
from sada.producers.privacy import is_pseudonym

pytestmark = pytest.mark.broker

PATH = "/api/v1/events"
RESULTS = ("accepted", "duplicate", "pending", "rejected")
SOURCE = "/integrations/test-bot"
BOT_KEY = f"bot-{uuid.uuid4().hex}"
DESK_KEY = f"desk-{uuid.uuid4().hex}"
SLOW_KEY = f"slow-{uuid.uuid4().hex}"
BOT_TYPES = [
    "sada.submission.created",
    "sada.submission.withdrawn",
    "sada.vote.cast",
    "sada.vote.retracted",
]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


CONFIG: Config = parse_config(
    {
        "integrators": [
            {
                "id": "bot",
                "key_sha256": sha256(BOT_KEY),
                "sources": [SOURCE],
                "types": BOT_TYPES,
                "rate_per_second": 1e9,
            },
            {
                "id": "desk",
                "key_sha256": sha256(DESK_KEY),
                "sources": ["/units/"],
                "types": ["sada.response.posted"],
                "rate_per_second": 1e9,
            },
            {
                "id": "slow",
                "key_sha256": sha256(SLOW_KEY),
                "sources": ["/integrations/slow"],
                "types": BOT_TYPES,
                "rate_per_second": 1,
            },
        ],
        "units": [
            {"id": "univ", "name": "دانشگاه"},
            {"id": "univ.hospital-a", "name": "بیمارستان الف", "parent": "univ"},
        ],
    }
)


# -- the server ---------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: Any  # the decoded JSON


@dataclass(frozen=True)
class Server:
    port: int
    registry: CollectorRegistry

    def post(
        self,
        body: bytes,
        *,
        key: str | None = BOT_KEY,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        chunked: bool = False,
    ) -> Reply:
        sent = {"Content-Type": content_type, **(headers or {})}
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            if chunked:
                pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)]
                conn.request("POST", PATH, body=iter(pieces), headers=sent, encode_chunked=True)
            else:
                conn.request("POST", PATH, body=body, headers=sent)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        return Reply(response.status, response.headers, json.loads(raw))

    def post_json(self, value: Any, **kwargs: Any) -> Reply:
        return self.post(json.dumps(value, ensure_ascii=False).encode(), **kwargs)

    def counted(self) -> dict[str, float]:
        """``sada_gateway_events_total`` by result, as scraped."""
        text = generate_latest(self.registry).decode()
        return {
            s.labels["result"]: s.value
            for family in text_string_to_metric_families(text)
            if family.name == "sada_gateway_events"
            for s in family.samples
            if s.name == "sada_gateway_events_total"
        }


@contextmanager
def serve(bootstrap: str, settings: Settings | None = None) -> Iterator[Server]:
    """Sada's HTTP application with the gateway installed, on a free port, until exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    registry = CollectorRegistry()
    gateway = routes(settings or Settings(), CONFIG, bootstrap, None, GatewayMetrics(registry))
    app = build_app(worker=None, store=None, registry=registry, extra_routes=[gateway])
    runner = web.AppRunner(app, access_log=None)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return int(runner.addresses[0][1])

    try:
        port = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
        yield Server(port, registry)
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


@pytest.fixture(scope="module")
def kafka(any_broker: str) -> str:
    topics.ensure_topics(any_broker, 4)
    return any_broker


@pytest.fixture(scope="module")
def server(kafka: str) -> Iterator[Server]:
    with serve(kafka) as s:
        yield s


# -- reading the topics ----------------------------------------------------------------
#
# Reads stop on a condition over what was read, not at the end offsets the
# broker reports (Tansu under-reports them after multi-record batches).


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


def event_ids(records: list[Any]) -> dict[str, Any]:
    """``id -> record`` of the records that are JSON objects with a string ``id``."""
    found = {}
    for r in records:
        try:
            value = orjson.loads(r.value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict) and isinstance(value.get("id"), str):
            found[value["id"]] = r
    return found


def published(bootstrap: str, topic: str, *ids: str) -> dict[str, tuple[bytes, dict[str, Any]]]:
    """``id -> (key, event)`` of the events ``ids``, waiting until all are on ``topic``."""
    records = asyncio.run(
        _scan(bootstrap, topic, lambda rs: set(ids) <= event_ids(rs).keys(), 20.0)
    )
    found = event_ids(records)
    return {i: (found[i].key, orjson.loads(found[i].value)) for i in ids}


def ids_before(bootstrap: str, topic: str, marker: str) -> set[str]:
    """Event ids on ``topic`` once ``marker`` is there; an earlier event of the same
    submission (same key, same partition) that is missing here was never published."""
    return set(copies_before(bootstrap, topic, marker))


def copies_before(bootstrap: str, topic: str, marker: str) -> Counter[str]:
    """How many times each event id is on ``topic``, once ``marker`` is there (as for
    :func:`ids_before`: what a submission's earlier requests published is before it)."""

    def done(records: list[Any]) -> bool:
        return marker in event_ids(records)

    copies: Counter[str] = Counter()
    for r in asyncio.run(_scan(bootstrap, topic, done, 20.0)):
        try:
            value = orjson.loads(r.value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict) and isinstance(value.get("id"), str):
            copies[value["id"]] += 1
    return copies


# -- events --------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def created(
    sid: str | None = None,
    *,
    source: str = SOURCE,
    author: str = "stu-8842",
    unit: str = "univ.hospital-a",
) -> dict[str, Any]:
    data = {
        "submission_id": sid or new_id("sub"),
        "tracking_code": new_tracking_code(),
        "kind": "complaint",
        "title": "کمبود پرستار در بخش اورژانس",
        "body": "در شیفت شب فقط یک پرستار در بخش اورژانس حضور دارد.",
        "language": "fa",
        "channel": "telegram",
        "unit_id": unit,
        "author": {"id": author, "role": "staff"},
        "anonymous": True,
    }
    return build_event(
        "sada.submission.created", data, source=source, event_id=new_id("ev"), validate=False
    )


def cast(sid: str, voter: str = "stu-1107", *, source: str = SOURCE) -> dict[str, Any]:
    data = {"submission_id": sid, "voter_id": voter, "stance": "support"}
    return build_event("sada.vote.cast", data, source=source, event_id=new_id("ev"))


def retracted(sid: str, voter: str = "stu-1107") -> dict[str, Any]:
    data = {"submission_id": sid, "voter_id": voter}
    return build_event("sada.vote.retracted", data, source=SOURCE, event_id=new_id("ev"))


def withdrawn(sid: str) -> dict[str, Any]:
    data = {"submission_id": sid}
    return build_event("sada.submission.withdrawn", data, source=SOURCE, event_id=new_id("ev"))


def response(sid: str, unit: str = "univ.hospital-a", **extra: Any) -> dict[str, Any]:
    data = {
        "submission_id": sid,
        "response_id": new_id("r"),
        "unit_id": unit,
        "kind": "answer",
        "body": "پرستار دوم از هفته آینده اضافه می‌شود.",
        **extra,
    }
    return build_event(
        "sada.response.posted",
        data,
        source="/units/hospital-a",
        event_id=new_id("ev"),
        validate=False,
    )


def ndjson(*events: dict[str, Any] | bytes) -> bytes:
    return b"\n".join(e if isinstance(e, bytes) else orjson.dumps(e) for e in events) + b"\n"


def statuses(reply: Reply) -> list[tuple[str, str | None]]:
    return [(r["status"], r.get("reason")) for r in reply.body["results"]]


# -- accepted -------------------------------------------------------------------------


def test_good_batch_is_accepted_and_on_the_input_topics(kafka: str, server: Server) -> None:
    sub = created()
    sid = sub["subject"]
    votes = [cast(sid), cast(sid, "stu-2"), retracted(sid)]

    reply = server.post_json([sub, *votes])

    assert reply.status == 202
    assert reply.body["accepted"] == 4 and reply.body["rejected"] == 0
    assert [(r["index"], r["id"], r["status"]) for r in reply.body["results"]] == [
        (i, e["id"], "accepted") for i, e in enumerate([sub, *votes])
    ]
    on_submissions = published(kafka, topics.SUBMISSIONS, sub["id"])
    on_votes = published(kafka, topics.VOTES, *(v["id"] for v in votes))
    for event in [sub, *votes]:
        key, value = {**on_submissions, **on_votes}[event["id"]]
        assert key == sid.encode()
        assert value == event


def test_one_object_and_ndjson_bodies(kafka: str, server: Server) -> None:
    sub = created()
    one = server.post_json(sub)
    assert (one.status, one.body["accepted"], one.body["rejected"]) == (202, 1, 0)

    sid = sub["subject"]
    first, second = cast(sid, "stu-3"), cast(sid, "stu-4")
    declared = server.post(ndjson(first, second), content_type="application/x-ndjson")
    assert (declared.status, declared.body["accepted"]) == (202, 2)

    third, fourth = cast(sid, "stu-5"), cast(sid, "stu-6")
    body = ndjson(third, b"{broken", fourth).replace(b"\n", b"\r\n", 1)
    detected = server.post(body, content_type="text/plain")
    assert detected.status == 202
    assert statuses(detected) == [
        ("accepted", None),
        ("rejected", "invalid_json"),
        ("accepted", None),
    ]
    assert [r["line"] for r in detected.body["results"]] == [1, 2, 3]
    published(kafka, topics.SUBMISSIONS, sub["id"])
    published(kafka, topics.VOTES, *(e["id"] for e in (first, second, third, fourth)))


def test_missing_dataschema_and_datacontenttype_are_filled(kafka: str, server: Server) -> None:
    sub = created()
    del sub["dataschema"], sub["datacontenttype"]
    no_id = cast(sub["subject"])
    del no_id["id"]

    reply = server.post_json([sub, no_id])

    assert statuses(reply) == [("accepted", None), ("rejected", "invalid_envelope")]
    _, value = published(kafka, topics.SUBMISSIONS, sub["id"])[sub["id"]]
    assert value["dataschema"] == contracts.schema_id("sada.submission.created")
    assert value["datacontenttype"] == "application/json"


def test_a_resent_event_is_a_duplicate_and_published_once(kafka: str, server: Server) -> None:
    sub = created()
    sid = sub["subject"]
    vote = cast(sid)
    first = server.post_json([sub, vote])
    assert statuses(first) == [("accepted", None), ("accepted", None)]

    again = server.post_json([sub, vote, vote])

    assert again.status == 202
    assert [r["status"] for r in again.body["results"]] == ["duplicate"] * 3
    counts = {k: again.body[k] for k in ("accepted", "duplicate", "pending", "rejected")}
    assert counts == {"accepted": 0, "duplicate": 3, "pending": 0, "rejected": 0}
    path = f"/api/v1/events/{sub['id']}?source=%2Fintegrations%2Ftest-bot"
    assert path in again.body["results"][0]["detail"]
    assert "earlier in this request" in again.body["results"][2]["detail"]
    later_vote, marker = cast(sid, "stu-9"), withdrawn(sid)
    later = server.post_json([later_vote, marker])
    assert statuses(later) == [("accepted", None), ("accepted", None)]
    # Each was published once: the copies were not sent again.
    assert copies_before(kafka, topics.SUBMISSIONS, marker["id"])[sub["id"]] == 1
    assert copies_before(kafka, topics.VOTES, later_vote["id"])[vote["id"]] == 1


def test_duplicates_within_one_request_are_published_once(kafka: str, server: Server) -> None:
    sub = created()
    marker = withdrawn(sub["subject"])
    reply = server.post_json([sub, sub, marker])
    assert statuses(reply) == [("accepted", None), ("duplicate", None), ("accepted", None)]
    assert (reply.body["accepted"], reply.body["duplicate"]) == (2, 1)
    assert copies_before(kafka, topics.SUBMISSIONS, marker["id"])[sub["id"]] == 1


def test_an_event_whose_submission_is_not_known_is_pending(kafka: str, server: Server) -> None:
    sid = new_id("sub")
    orphan = cast(sid)
    reply = server.post_json([orphan, created(sid), cast(sid, "stu-2")])
    # The vote before the creation waits for it; the vote after it does not.
    assert statuses(reply) == [("pending", None), ("accepted", None), ("accepted", None)]
    detail = reply.body["results"][0]["detail"]
    assert repr(sid) in detail and f"/api/v1/events/{orphan['id']}?source=" in detail
    assert (reply.body["accepted"], reply.body["pending"]) == (2, 1)
    # Pending events are published: their fate is decided downstream.
    published(kafka, topics.VOTES, orphan["id"])
    # A submission created through this gateway earlier is known to it.
    later = server.post_json(retracted(sid))
    assert statuses(later) == [("accepted", None)]


def test_every_event_is_counted_once_by_its_result(kafka: str) -> None:
    sid = new_id("sub")
    bad = cast(sid)
    bad["data"]["stance"] = "maybe"
    sub = created(sid)
    with serve(kafka) as s:
        first = s.post_json([cast(sid, "stu-1"), sub, sub, bad, cast(sid, "stu-2")])
        second = s.post_json([sub, cast(sid, "stu-3")])
        refused = s.post(b"[not json")
        counted = s.counted()
    assert [r["status"] for r in first.body["results"]] == [
        "pending",
        "accepted",
        "duplicate",
        "rejected",
        "accepted",
    ]
    assert refused.status == 400
    assert counted == {"accepted": 3.0, "duplicate": 2.0, "pending": 1.0, "rejected": 1.0}
    assert sum(counted.values()) == len(first.body["results"]) + len(second.body["results"])


# -- rejected events -------------------------------------------------------------------


def test_invalid_events_are_rejected_with_reasons_and_not_published(
    kafka: str, server: Server
) -> None:
    sid = new_id("sub")
    good = created(sid)
    bad_stance = cast(sid)
    bad_stance["data"]["stance"] = "maybe"
    unknown_unit = created(unit="univ.nowhere")
    bad_code = created()
    bad_code["data"]["tracking_code"] = "12345678"  # wrong check digit
    mismatch = cast(sid)
    mismatch["subject"] = "sub-other"
    misspelled = cast(sid)
    misspelled["type"] = "sada.vote.casted"
    not_an_object: list[Any] = ["sada.vote.cast"]
    marker = withdrawn(sid)  # after the others, on the partition of sid

    reply = server.post_json(
        [good, bad_stance, unknown_unit, bad_code, mismatch, misspelled, not_an_object, marker]
    )

    assert reply.status == 202
    assert reply.body["accepted"] == 2 and reply.body["rejected"] == 6
    assert statuses(reply) == [
        ("accepted", None),
        ("rejected", "schema_violation"),
        ("rejected", "unknown_unit"),
        ("rejected", "invalid_tracking_code"),
        ("rejected", "subject_mismatch"),
        ("rejected", "unknown_type"),
        ("rejected", "invalid_envelope"),
        ("accepted", None),
    ]
    details = [r.get("detail", "") for r in reply.body["results"]]
    assert "stance" in details[1] and "univ.nowhere" in details[2]
    on_submissions = ids_before(kafka, topics.SUBMISSIONS, marker["id"])
    assert good["id"] in on_submissions
    assert unknown_unit["id"] not in on_submissions and bad_code["id"] not in on_submissions


def test_referral_needs_a_known_target_unit(kafka: str, server: Server) -> None:
    sid = new_id("sub")
    to_known = response(sid, kind="referral", referred_to_unit_id="univ")
    to_unknown = response(sid, kind="referral", referred_to_unit_id="univ.nowhere")
    reply = server.post_json([to_known, to_unknown], key=DESK_KEY)
    # Pending: the gateway has not seen the submission these respond to.
    assert statuses(reply) == [("pending", None), ("rejected", "unknown_unit")]
    published(kafka, topics.RESPONSES, to_known["id"])


def test_an_event_over_the_size_limit_is_rejected_alone(kafka: str) -> None:
    small = Settings(max_event_bytes=4096)
    sid = new_id("sub")
    big = created(sid)
    big["data"]["body"] = "صدای دانشجو " * 300  # valid text, about 6.9 kB in UTF-8
    with serve(kafka, small) as s:
        reply = s.post_json([big, cast(sid)])
        line = s.post(ndjson(cast(sid), big), content_type="application/x-ndjson")
    assert statuses(reply) == [("rejected", "too_large"), ("pending", None)]
    assert statuses(line) == [("pending", None), ("rejected", "too_large")]


def test_all_rejected_is_still_202_and_needs_no_broker(free_port: int) -> None:
    bad = cast(new_id("sub"))
    bad["data"]["stance"] = "maybe"
    with serve(f"127.0.0.1:{free_port}") as s:
        reply = s.post_json([bad, bad])
    assert reply.status == 202
    counts = [reply.body[k] for k in ("accepted", "duplicate", "pending", "rejected")]
    assert counts == [0, 0, 0, 2]


# -- refused requests --------------------------------------------------------------------


def test_malformed_bodies_are_400(server: Server) -> None:
    for body, content_type in [
        (b"this is not json", "application/json"),
        (b"\xff\xfe\x00garbage\nmore garbage\n", "application/json"),
        (b"", "application/json"),
        (b"   \n\n", "application/x-ndjson"),
        (b"1\n2\n", "application/x-ndjson"),
        (b'{"truncated": ', "application/json"),
    ]:
        reply = server.post(body, content_type=content_type)
        assert reply.status == 400, body
        assert reply.body["error"] == "malformed_body"
        assert reply.body["message"]


def test_compressed_bodies_are_read_and_limited_after_decompression(
    kafka: str, server: Server
) -> None:
    sub = created()
    packed = server.post(gzip.compress(orjson.dumps([sub])), headers={"Content-Encoding": "gzip"})
    assert (packed.status, packed.body["accepted"]) == (202, 1)
    broken = server.post(b"not gzip at all", headers={"Content-Encoding": "gzip"})
    assert (broken.status, broken.body["error"]) == (400, "malformed_body")
    bomb = gzip.compress(b"[" + b"0," * MAX_BODY_BYTES + b"0]")  # a few kB, 2 MiB unpacked
    exploded = server.post(bomb, headers={"Content-Encoding": "gzip"})
    assert (exploded.status, exploded.body["error"]) == (413, "body_too_large")
    published(kafka, topics.SUBMISSIONS, sub["id"])


def test_body_over_one_mebibyte_is_413(server: Server) -> None:
    body = b"[" + b"0," * (MAX_BODY_BYTES // 2) + b"0]"
    declared = server.post(body)
    assert (declared.status, declared.body["error"]) == (413, "body_too_large")
    streamed = server.post(body, chunked=True)
    assert (streamed.status, streamed.body["error"]) == (413, "body_too_large")


def test_batch_over_the_limit_is_400(server: Server) -> None:
    sid = new_id("sub")
    batch = [cast(sid, f"v-{i}") for i in range(MAX_BATCH + 1)]
    reply = server.post_json(batch)
    assert (reply.status, reply.body["error"]) == (400, "batch_too_large")
    lines = server.post(ndjson(*batch), content_type="application/x-ndjson")
    assert (lines.status, lines.body["error"]) == (400, "batch_too_large")
    at_limit = server.post_json(batch[:MAX_BATCH])
    assert (at_limit.status, at_limit.body["pending"]) == (202, MAX_BATCH)


def test_missing_or_unknown_key_is_401(server: Server) -> None:
    body = orjson.dumps(created())
    for key, headers in [
        (None, {}),
        ("wrong-key", {}),
        (BOT_KEY + "x", {}),
        (None, {"Authorization": f"Basic {BOT_KEY}"}),
        (None, {"Authorization": "Bearer "}),
    ]:
        reply = server.post(body, key=key, headers=headers)
        assert reply.status == 401, (key, headers)
        assert reply.body["error"] == "unauthorized"
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
        assert BOT_KEY not in json.dumps(reply.body)


def test_out_of_scope_source_is_403_and_nothing_is_published(kafka: str, server: Server) -> None:
    sid = new_id("sub")
    good = created(sid)
    foreign = cast(sid, source="/integrations/whatsapp")
    lookalike = cast(sid, source=SOURCE + "-copy")

    reply = server.post_json([good, foreign, lookalike])

    assert reply.status == 403
    assert reply.body["error"] == "forbidden"
    assert [(r["index"], r["reason"]) for r in reply.body["reasons"]] == [
        (1, "forbidden"),
        (2, "forbidden"),
    ]
    assert "/integrations/whatsapp" in reply.body["reasons"][0]["detail"]
    # The next request's event of the same submission lands on the same
    # partition, after anything the refused request could have published.
    marker = withdrawn(sid)
    assert server.post_json(marker).status == 202
    assert good["id"] not in ids_before(kafka, topics.SUBMISSIONS, marker["id"])


def test_sources_below_an_allowed_prefix_are_in_scope(kafka: str, server: Server) -> None:
    sub = created(source=SOURCE + "/group-7")
    reply = server.post_json(sub)
    assert (reply.status, reply.body["accepted"]) == (202, 1)
    desk = response(new_id("sub"))
    desk["source"] = "/units/hospital-a/ward-3"
    assert server.post_json(desk, key=DESK_KEY).status == 202


def test_out_of_scope_type_is_403(server: Server) -> None:
    sid = new_id("sub")
    answer = response(sid)
    answer["source"] = SOURCE
    reply = server.post_json([created(sid), answer])
    assert reply.status == 403
    assert [r["index"] for r in reply.body["reasons"]] == [1]
    assert "sada.response.posted" in reply.body["reasons"][0]["detail"]

    escalation = build_event(
        "sada.submission.escalated",
        {
            "submission_id": sid,
            "from_level": 0,
            "to_level": 1,
            "from_unit_id": "univ.hospital-a",
            "to_unit_id": "univ",
            "reason": "support_threshold",
            "support": 50,
        },
        source=SOURCE,
    )
    refused = server.post_json(escalation)
    assert (refused.status, refused.body["error"]) == (403, "forbidden")


def test_rate_limit_is_429_with_retry_after(server: Server) -> None:
    # 1 event a second, a bucket of 2; a 20-event batch is admitted into debt.
    sid = new_id("sub")
    batch = [cast(sid, f"v-{i}", source="/integrations/slow") for i in range(20)]
    first = server.post_json(batch, key=SLOW_KEY)
    assert (first.status, first.body["pending"]) == (202, 20)
    refused = server.post_json(cast(sid, source="/integrations/slow"), key=SLOW_KEY)
    assert refused.status == 429
    assert refused.body["error"] == "rate_limited"
    retry = int(refused.headers["Retry-After"])
    assert 10 <= retry <= 20  # the debt of about 18 events, at one a second
    # Other keys have buckets of their own.
    assert server.post_json(created()).status == 202


def test_kafka_unavailable_is_503(free_port: int) -> None:
    with serve(f"127.0.0.1:{free_port}") as s:
        reply = s.post_json(created())
    assert reply.status == 503
    assert reply.body["error"] == "broker_unavailable"
    assert f"127.0.0.1:{free_port}" in reply.body["message"]


# -- pseudonyms ---------------------------------------------------------------------------


def test_person_ids_are_pseudonymised_and_stable(kafka: str) -> None:
    keyed = Settings(pseudonym_key="the organisation's secret")
    sid = new_id("sub")
    first = created(sid, author="98123456")
    second = created(author="98123456")
    other = created(author="98123457")
    vote = cast(sid, voter="98123456")
    with serve(kafka, keyed) as s:
        reply = s.post_json([first, second, other, vote])
        assert reply.body["accepted"] == 4
        subs = published(kafka, topics.SUBMISSIONS, first["id"], second["id"], other["id"])
        [(_, voted)] = published(kafka, topics.VOTES, vote["id"]).values()
        pseudonym = voted["data"]["voter_id"]
        # A pseudonym sent again is kept as it is, not hashed twice.
        again = cast(sid, voter=pseudonym)
        assert s.post_json(again).body["accepted"] == 1
        [(_, kept)] = published(kafka, topics.VOTES, again["id"]).values()

    authors = [subs[e["id"]][1]["data"]["author"]["id"] for e in (first, second, other)]
    assert is_pseudonym(pseudonym) and "98123456" not in pseudonym
    assert authors[0] == authors[1] == pseudonym
    assert authors[2] != pseudonym and is_pseudonym(authors[2])
    assert kept["data"]["voter_id"] == pseudonym
    for _, value in subs.values():
        contracts.validate_event(value)
        assert "9812345" not in orjson.dumps(value).decode()


# -- fuzzing ------------------------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
ENVELOPE_KEYS = [
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "subject",
    "datacontenttype",
    "dataschema",
    "data",
    "ext",
]

_FUZZ_SID = new_id("fuzz")
TEMPLATES = [created(_FUZZ_SID), cast(_FUZZ_SID), retracted(_FUZZ_SID), withdrawn(_FUZZ_SID)]


@st.composite
def mutated_events(draw: st.DrawFn) -> dict[str, Any]:
    event = copy.deepcopy(draw(st.sampled_from(TEMPLATES)))
    for _ in range(draw(st.integers(0, 3))):
        target = event if draw(st.booleans()) else event.get("data")
        if not isinstance(target, dict):
            continue
        keys = sorted(set(target) | set(ENVELOPE_KEYS if target is event else ["unit_id"]))
        key = draw(st.sampled_from(keys))
        if draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = draw(JSON)
    return event


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str, int | None]:
    """(body, content type, number of events in it when it is well formed, else None)."""
    kind = draw(st.sampled_from(["bytes", "json", "event", "array", "ndjson"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300)), "application/json", None
    if kind == "json":
        value = draw(JSON)
        count = len(value) if isinstance(value, list) else 1
        return json.dumps(value).encode(), "application/json", count
    if kind == "event":
        return json.dumps(draw(mutated_events())).encode(), "application/json", 1
    items = draw(st.lists(mutated_events() | JSON, min_size=1, max_size=6))
    if kind == "array":
        return json.dumps(items).encode(), "application/json", len(items)
    lines = [json.dumps(i).encode() for i in items]
    if draw(st.booleans()):
        garbage = draw(st.binary(max_size=40)).replace(b"\n", b" ") + b"x"
        lines.insert(draw(st.integers(0, len(lines))), garbage)
    has_object = any(line.startswith(b"{") for line in lines)
    return b"\n".join(lines), "application/x-ndjson", len(lines) if has_object else None


@settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=bodies())
def test_no_body_gets_a_500(server: Server, case: tuple[bytes, str, int | None]) -> None:
    body, content_type, count = case
    reply = server.post(body, content_type=content_type)
    hypothesis.event(f"status {reply.status}")
    assert reply.status in (202, 400, 403), reply.body
    assert isinstance(reply.body, dict)
    if reply.status == 202:
        results = reply.body["results"]
        counts = Counter(r["status"] for r in results)
        assert set(counts) <= set(RESULTS)
        assert {r: reply.body[r] for r in RESULTS} == {r: counts[r] for r in RESULTS}
        for r in RESULTS:
            hypothesis.event(f"some {r}" if counts[r] else f"none {r}")
        if count is not None:
            assert len(results) == count
    else:
        assert reply.body["error"] in ("malformed_body", "forbidden", "batch_too_large")

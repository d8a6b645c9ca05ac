"""The load process: the workload and the latency load, made and sent from a process of its own.

The load (generation, the raw broker test, publishing, the latency sender and
reader) does not share an interpreter with the pipeline it measures. The bench
starts it with :func:`start` and talks to it by the protocol of
:mod:`sada.infra.child`: the job says what to do; the load says ``ready`` when
connected, waits for ``go`` before each timed send, and reports what it
measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sada.app.bench.mixes import Record, generate
from sada.app.bench.plan import LATENCY_DRAIN_SECONDS
from sada.app.bench.scratch import RAW_TOPIC, create_topic, delete_topics
from sada.infra import topics
from sada.infra.child import READY, Child, Parent
from sada.infra.reading import partitions_of
from sada.pipeline.domain.config import Config, load_config
from sada.pipeline.domain.errors import SadaError

LATENCY_BASE = datetime(2026, 1, 3, 6, 0, tzinfo=UTC)
LATENCY_SOURCE = "/integrations/bench"

PRODUCER_OPTIONS: Mapping[str, Any] = {
    "acks": "all",
    "linger_ms": 5,
    "max_batch_size": 262_144,
}
FETCH_BYTES = 4 * 1024 * 1024
RAW_ROUNDS = 2

# What the bench says to the load, and what the load reports.
GO = "go"
PROGRESS = "progress"  # events generated so far
GENERATED = "generated"
RAW = "raw"
PUBLISHED = "published"
LATENCY = "latency"


def start(job: dict[str, Any]) -> Child:
    """Start the load process on ``job`` (``kind`` "workload" or "latency", and its numbers)."""
    return Child.start(_child_main, (job,), name="sada-bench-load", label="the load process")


def _child_main(parent: Parent, job: dict[str, Any]) -> None:
    config = load_config(Path(job["config"]) if job["config"] else None)
    if job["kind"] == "workload":
        _workload_child(parent, job, config)
    else:
        asyncio.run(_latency_child(parent, job, config))


async def _go(parent: Parent) -> bool:
    """Wait for ``go``: False if the bench said anything else (``stop``) or went away."""
    message = await asyncio.to_thread(parent.receive)
    return message is not None and message.kind == GO


def _workload_child(parent: Parent, job: dict[str, Any], config: Config) -> None:
    n = int(job["events"])
    records, types = generate(
        config, n, int(job["seed"]), job["mix"], lambda k: parent.send(PROGRESS, k)
    )
    parent.send(
        GENERATED,
        {
            "events": len(records),
            "bytes": sum(len(v) for _, _, v in records),
            "types": dict(types),
        },
    )
    parent.send(RAW, asyncio.run(_raw_rates(job["bootstrap"], records, int(job["partitions"]))))
    seconds = asyncio.run(_publish_on_go(parent, job["bootstrap"], records))
    if seconds is not None:
        parent.send(PUBLISHED, seconds)


def _producer(bootstrap: str) -> Any:
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_OPTIONS)


async def _send_all(producer: Any, records: Sequence[Record], topic: str | None = None) -> None:
    futures = [await producer.send(topic or t, value, key=key) for t, key, value in records]
    await asyncio.gather(*futures)


async def _raw_rates(bootstrap: str, records: Sequence[Record], partitions: int) -> dict[str, Any]:
    """Produce then consume ``records`` on a topic of their own, twice; the better of each.

    Two rounds, because one is noisy on a small machine where the broker and
    the client share the cores: the limit is what the pair can do, not what
    one unlucky round did. Produced twice per round: one ``send`` per record,
    as integrators publish (and as the workload is published), and as record
    batches built directly, as ingress writes the canonical log.
    """
    rounds = []
    for _ in range(RAW_ROUNDS):
        round_: dict[str, float] = {}
        for way in ("send", "batches"):
            await asyncio.to_thread(delete_topics, bootstrap, [RAW_TOPIC])
            await asyncio.to_thread(create_topic, bootstrap, RAW_TOPIC, partitions)
            producer = _producer(bootstrap)
            await producer.start()
            try:
                await producer.partitions_for(RAW_TOPIC)  # metadata before the clock starts
                started = time.perf_counter()
                if way == "send":
                    await _send_all(producer, records, RAW_TOPIC)
                else:
                    await _send_batches(producer, records, RAW_TOPIC, partitions)
                round_[f"{way}_seconds"] = time.perf_counter() - started
            finally:
                await producer.stop()
            if way == "send":
                consumed, round_["consume_seconds"] = await _consume_all(bootstrap, RAW_TOPIC)
                if consumed != len(records):
                    raise SadaError(
                        f"raw test: produced {len(records)} messages, consumed {consumed}"
                    )
        rounds.append(round_)
    await asyncio.to_thread(delete_topics, bootstrap, [RAW_TOPIC])
    produce = min(r["send_seconds"] for r in rounds)
    batches = min(r["batches_seconds"] for r in rounds)
    consume = min(r["consume_seconds"] for r in rounds)
    return {
        "messages": len(records),
        "rounds": rounds,
        "produce_rate": len(records) / produce,
        "batch_produce_rate": len(records) / batches,
        "consume_rate": len(records) / consume,
    }


async def _send_batches(
    producer: Any, records: Sequence[Record], topic: str, partitions: int
) -> None:
    """Produce ``records`` as record batches, as ingress writes the log."""
    from sada.pipeline.stages.record_batches import RecordBatches

    batches = RecordBatches(producer, topic)
    for i, (_topic, key, value) in enumerate(records):
        await batches.add(i % partitions, key, value)
    await asyncio.gather(*await batches.send())


async def _consume_all(bootstrap: str, topic: str) -> tuple[int, float]:
    """Read every partition of ``topic`` to its fetch high watermark: (messages, seconds)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=FETCH_BYTES,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_of(consumer, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        remaining = set(tps)
        quiet = dict.fromkeys(tps, 0)
        n = 0
        started = time.perf_counter()
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=200, max_records=10_000)
            for msgs in batch.values():
                n += len(msgs)
            for tp in list(remaining):
                hw = consumer.highwater(tp)
                if hw is not None and await consumer.position(tp) >= hw:
                    remaining.discard(tp)
                elif hw is None and not batch.get(tp):
                    quiet[tp] += 1
                    if quiet[tp] >= 3:  # no fetch answer with a high watermark: empty
                        remaining.discard(tp)
        return n, time.perf_counter() - started
    finally:
        await consumer.stop()


async def _publish_on_go(parent: Parent, bootstrap: str, records: Sequence[Record]) -> float | None:
    """Connect, say ``ready``, wait for ``go``, publish everything: the seconds it took."""
    producer = _producer(bootstrap)
    await producer.start()
    try:
        for topic in sorted({t for t, _, _ in records}):
            await producer.partitions_for(topic)
        parent.send(READY, len(records))
        if not await _go(parent):
            return None
        started = time.perf_counter()
        await _send_all(producer, records)
        return time.perf_counter() - started
    finally:
        await producer.stop()


# -- the latency load ----------------------------------------------------------------------


class _LatencyLoad:
    """Submissions with 49 supporters each, then each one's 50th supporter among filler votes."""

    def __init__(self, config: Config, seed: int, targets: int, fillers: int) -> None:
        from sada.producers.events import topic_for

        self._topic_for = topic_for
        self.rng = random.Random(seed)
        self.unit = _unit_with_parent(config)
        self.threshold = config.ladder[0] if config.ladder else 50
        self.targets = [self._id() for _ in range(targets)]
        self.fillers = [self._id() for _ in range(fillers)]
        self._voters = itertools.count()
        self._codes: set[str] = set()
        self.setup_end = LATENCY_BASE

    def _id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _event(self, type_: str, data: dict[str, Any], at: datetime) -> dict[str, Any]:
        from sada.producers.events import build_event

        return build_event(
            type_, data, source=LATENCY_SOURCE, time=at, rng=self.rng, validate=False
        )

    def _record(self, event: dict[str, Any]) -> Record:
        from sada.pipeline.domain.logcodec import dumps as encode

        return (self._topic_for(event), str(event["subject"]).encode(), encode(event))

    def _created(self, sid: str, at: datetime) -> dict[str, Any]:
        from sada.pipeline.domain.tracking import new_tracking_code

        code = new_tracking_code(self.rng)
        while code in self._codes:
            code = new_tracking_code(self.rng)
        self._codes.add(code)
        return self._event(
            "sada.submission.created",
            {
                "submission_id": sid,
                "tracking_code": code,
                "kind": "suggestion",
                "title": "Longer opening hours for the library",
                "body": "Open the central library until midnight during the exam weeks.",
                "language": "en",
                "channel": "web",
                "unit_id": self.unit,
                "author": {"id": f"bench-author-{sid[:8]}", "role": "student"},
                "anonymous": False,
            },
            at,
        )

    def _vote(self, sid: str, stance: str, at: datetime) -> dict[str, Any]:
        voter = f"bench-voter-{next(self._voters)}"
        return self._event(
            "sada.vote.cast", {"submission_id": sid, "voter_id": voter, "stance": stance}, at
        )

    def setup(self) -> list[Record]:
        """Every submission created; each target one supporter short of the first threshold."""
        from sada.infra.contracts import validate_event

        at = LATENCY_BASE
        step = timedelta(milliseconds=1)
        events: list[dict[str, Any]] = []
        for sid in self.fillers + self.targets:
            events.append(self._created(sid, at))
            at += step
        for sid in self.targets:
            for _ in range(self.threshold - 1):
                events.append(self._vote(sid, "support", at))
                at += step
        # Built without per-event validation (it is slow); one of each kind checks the shape.
        validate_event(events[0])
        validate_event(events[-1])
        self.setup_end = at
        return [self._record(e) for e in events]

    def target_vote(self, i: int, at: datetime) -> Record:
        return self._record(self._vote(self.targets[i], "support", at))

    def filler_vote(self, i: int, at: datetime) -> Record:
        return self._record(self._vote(self.fillers[i % len(self.fillers)], "oppose", at))


def _unit_with_parent(config: Config) -> str:
    """A unit below the root, so a support escalation has somewhere to go."""
    for unit in config.units.values():
        if unit.parent is not None:
            return unit.id
    if not config.units:
        raise SadaError("the configuration has no units")
    return next(iter(config.units))


async def _latency_child(parent: Parent, job: dict[str, Any], config: Config) -> None:
    import orjson
    from aiokafka import AIOKafkaConsumer, TopicPartition

    total = int(job["events"])
    every = int(job["every"])
    rate = float(job["rate"])
    load = _LatencyLoad(config, int(job["seed"]), total // every, int(job["fillers"]))
    setup = load.setup()
    bootstrap = job["bootstrap"]
    producer = _producer(bootstrap)
    await producer.start()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        # The reader should add as little as it can: short fetch waits.
        fetch_max_wait_ms=5,
    )
    await consumer.start()
    try:
        for topic in topics.INPUT_TOPICS:
            await producer.partitions_for(topic)
        parent.send(READY, len(setup))
        if not await _go(parent):
            return
        started = time.perf_counter()
        await _send_all(producer, setup)
        parent.send(PUBLISHED, time.perf_counter() - started)
        if not await _go(parent):
            return

        tps = [
            TopicPartition(topics.ESCALATIONS, p)
            for p in await partitions_of(consumer, topics.ESCALATIONS)
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        targets = set(load.targets)
        sent: dict[str, float] = {}
        received: dict[str, float] = {}

        async def read() -> None:
            while True:
                batch = await consumer.getmany(timeout_ms=50)
                now = time.perf_counter()
                for msgs in batch.values():
                    for m in msgs:
                        event = orjson.loads(m.value)
                        data = event.get("data") or {}
                        sid = data.get("submission_id")
                        if (
                            sid in targets
                            and data.get("reason") == "support_threshold"
                            and sid not in received
                        ):
                            received[sid] = now

        reader = asyncio.create_task(read())
        futures = []
        paced_base = load.setup_end + timedelta(minutes=1)
        target_i = 0
        i = 0
        start = time.perf_counter()
        while i < total:
            now = time.perf_counter()
            due = min(total, int((now - start) * rate) + 1)
            at = paced_base + timedelta(seconds=now - start)
            while i < due:
                if i % every == every - 1 and target_i < len(load.targets):
                    record = load.target_vote(target_i, at)
                    sent[load.targets[target_i]] = time.perf_counter()
                    target_i += 1
                else:
                    record = load.filler_vote(i, at)
                topic, key, value = record
                futures.append(await producer.send(topic, value, key=key))
                i += 1
            await asyncio.sleep(0.001)
        send_seconds = time.perf_counter() - start
        await asyncio.gather(*futures)
        deadline = time.perf_counter() + LATENCY_DRAIN_SECONDS
        while len(received) < len(sent) and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        latencies = [(received[s] - t) * 1000 for s, t in sent.items() if s in received]
        parent.send(
            LATENCY,
            {
                "latencies_ms": latencies,
                "sent": len(sent),
                "missing": len(sent) - len(latencies),
                "events": total,
                "send_seconds": send_seconds,
                "offered_rate": total / send_seconds,
            },
        )
    finally:
        await consumer.stop()
        await producer.stop()

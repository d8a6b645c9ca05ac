"""The ingress stage on Kafka: input topics -> :class:`Ingress` -> canonical log or ``sada.dlq``.

Thin: decode and decide are in :mod:`sada.pipeline.domain.ingress`; this module only
moves bytes. On start it learns the canonical log and the DLQ (so a restart
neither re-logs nor re-rejects anything), then consumes the input partitions by
manual assignment. An input offset is committed only once its message has been
settled: written to the log, written to the DLQ, or absorbed as a duplicate.
Crash anywhere, and restart re-reads from the last commit; what was already
logged is absorbed by event key, what was already rejected by position.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from sada.infra import contracts, topics
from sada.infra.metrics import Metrics
from sada.infra.settings import Settings
from sada.pipeline.domain.config import Config
from sada.pipeline.domain.errors import BrokerError
from sada.pipeline.domain.ingress import (
    Ingress,
    InputMessage,
    InputPosition,
    Output,
    Reject,
    Release,
)
from sada.pipeline.domain.logcodec import decode as decode_log
from sada.pipeline.stages.record_batches import RecordBatches
from sada.pipeline.stages.stage import FETCH_MAX_WAIT_MS, KafkaStage

log = logging.getLogger(__name__)

GROUP = "sada-ingress"
DETAIL_MAX = 500


@dataclass(slots=True)
class IngressStats:
    received: int = 0
    released: int = 0
    rejected: int = 0
    duplicates: int = 0
    late: int = 0
    ticks: int = 0
    commits: int = 0
    positions: dict[str, int] = field(default_factory=dict)


async def read_topic_to_end(
    bootstrap: str, topic: str, on_record: Any, max_records: int = 10000, timeout: float = 120.0
) -> int:
    """Feed every record of ``topic`` (all partitions, beginning to current end) to a callback.

    The end is the high watermark that fetch responses report, not ListOffsets:
    some Kafka-compatible brokers (Tansu 0.6) answer ListOffsets(latest) with the
    last batch's base offset + 1, which would cut off the rest of that batch.
    ListOffsets still tells an empty partition (end = beginning) from one with data.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return 0
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > starts[tp]}
        deadline = time.monotonic() + timeout
        n = 0
        while remaining:
            if time.monotonic() > deadline:
                raise BrokerError(f"reading {topic} to its end took over {timeout:g}s")
            batch = await consumer.getmany(*remaining, timeout_ms=200, max_records=max_records)
            for msgs in batch.values():
                for m in msgs:
                    on_record(m.partition, m)
                    n += 1
            for tp in list(remaining):
                hw = consumer.highwater(tp)
                if hw is not None and await consumer.position(tp) >= hw:
                    remaining.discard(tp)
        return n
    finally:
        await consumer.stop()


class IngressStage(KafkaStage):
    def __init__(self, settings: Settings, config: Config, metrics: Metrics, bootstrap: str):
        super().__init__(bootstrap)
        self.settings = settings
        self.metrics = metrics
        self.stats = IngressStats()
        self.ingress = Ingress(
            units=config.units.keys(),
            log_partitions=settings.partitions,
            partition_for=topics.partition_for,
            decode=contracts.decode,
            validate=contracts.validate_event,
            topic_of_type=contracts.TOPIC_OF_TYPE,
            clock_mode=settings.clock,
            idle_seconds=settings.idle_seconds,
            tick_seconds=settings.tick_seconds,
            grace_seconds=settings.grace_seconds,
            max_event_bytes=settings.max_event_bytes,
        )
        self._unsettled: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._handed: dict[TopicPartition, float] = {}  # when its records were last handed over

    async def _restore(self) -> None:
        def on_log(_partition: int, m: Any) -> None:
            rec, ce = decode_log(m.value)
            if ce is None:
                self.ingress.restore_tick(rec.at)
            else:
                self.ingress.restore_logged(ce, rec.at)

        def on_dlq(_partition: int, m: Any) -> None:
            h = {k: v.decode("utf-8", "replace") for k, v in (m.headers or ())}
            # A record some other tool put on the DLQ has no position: skip it.
            with contextlib.suppress(KeyError, ValueError):
                self.ingress.restore_rejected(
                    (h["sada.topic"], int(h["sada.partition"]), int(h["sada.offset"])), m.value
                )

        n = await read_topic_to_end(self.bootstrap, topics.LOG, on_log)
        d = await read_topic_to_end(self.bootstrap, topics.DLQ, on_dlq)
        log.info("ingress restored %d log records and %d rejections", n, d)

    async def start(self) -> None:
        await self._restore()
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", linger_ms=0, max_batch_size=262144
        )
        await self._producer.start()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=GROUP,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        await consumer.start()
        self._consumer = consumer
        tps = []
        for topic in topics.INPUT_TOPICS:
            for p in sorted(consumer.partitions_for_topic(topic) or ()):
                tps.append(TopicPartition(topic, p))
        consumer.assign(tps)
        fresh = []
        for tp in tps:
            committed = await consumer.committed(tp)
            if committed is None:
                fresh.append(tp)
                self._committed[tp] = 0
            else:
                consumer.seek(tp, committed)
                self._committed[tp] = committed
        if fresh:
            # One call for all: each call waits for an offset reset of its own
            # (about half a second apiece), which made startup grow with partitions.
            await consumer.seek_to_beginning(*fresh)
        self.ingress.track_partitions(((tp.topic, tp.partition) for tp in tps), time.time())
        self.state = "running"

    async def run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        last_commit = time.monotonic()
        writing: asyncio.Future[None] | None = None
        while not self._stopping.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            if writing is not None and writing.done():
                writing.result()  # a failed write stops the stage here, not later
            now = time.time()
            await self._note_backlog(consumer, batch, now)
            msgs: list[InputMessage] = []
            for tp, fetched in batch.items():
                unsettled = self._unsettled.setdefault(tp, set())
                for m in fetched:
                    unsettled.add(m.offset)
                    msgs.append(InputMessage(m.topic, m.partition, m.offset, m.key, m.value))
                if fetched:
                    self._next[tp] = fetched[-1].offset + 1
            self.stats.received += len(msgs)
            # One clock move per fetched batch: per message it cost more than the rest.
            outputs = self.ingress.offer_many(msgs, now)
            if outputs:
                # One round in flight: this batch's records are written while the next
                # is fetched and decided, and each round starts after the last one's
                # acknowledgement, so the log keeps the order of the outputs.
                if writing is not None:
                    await writing
                writing = asyncio.ensure_future(self._carry_out(outputs))
            if time.monotonic() - last_commit > 0.5:
                await self._commit()
                last_commit = time.monotonic()
        if writing is not None:
            await writing
        await self._commit()

    async def _note_backlog(
        self, consumer: AIOKafkaConsumer, handed: Iterable[TopicPartition], now: float
    ) -> None:
        """Mark the partitions that may hold records ingress has not seen: behind, not idle.

        Behind: the consumer's position is below the last fetch's high watermark,
        or no fetch has answered for the partition since records of it were last
        handed over (while ingress works through a large batch, more may have
        arrived). Only a fetch that finds nothing new lets idleness count.
        """
        for tp in handed:
            self._handed[tp] = now
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            polled = consumer.last_poll_timestamp(tp)
            behind = hw is not None and await consumer.position(tp) < hw
            unheard = tp in self._handed and (polled is None or polled / 1000 <= self._handed[tp])
            if behind or unheard:
                self.ingress.backlogged((tp.topic, tp.partition), now)

    async def _carry_out(self, outputs: list[Output]) -> None:
        """Write the outputs; count them, and settle their inputs, once the broker has them.

        Log records go out as record batches (:mod:`~sada.pipeline.stages.record_batches`),
        in the order of ``outputs`` within each partition.
        """
        assert self._producer is not None
        producer = self._producer
        futures: list[Awaitable[Any]] = []
        log_records = RecordBatches(producer, topics.LOG)
        for out in outputs:
            if isinstance(out, Release):
                key = out.key.encode() if out.key else None
                await log_records.add(out.log_partition, key, out.value)
            elif isinstance(out, Reject):
                msg = out.message
                headers = [
                    ("sada.reason", str(out.reason).encode()),
                    ("sada.detail", out.detail[:DETAIL_MAX].encode("utf-8", "replace")),
                    ("sada.topic", msg.topic.encode()),
                    ("sada.partition", str(msg.partition).encode()),
                    ("sada.offset", str(msg.offset).encode()),
                ]
                futures.append(
                    await producer.send(topics.DLQ, value=msg.value, key=msg.key, headers=headers)
                )
        futures.extend(await log_records.send())
        if futures:
            await asyncio.gather(*futures)
        self._count(outputs)

    def _count(self, outputs: list[Output]) -> None:
        m = self.metrics
        stats = self.stats
        accepted: Counter[tuple[str, str]] = Counter()
        late: Counter[str] = Counter()
        for out in outputs:
            if isinstance(out, Release):
                if out.settles is None:
                    stats.ticks += 1
                    continue
                accepted[(out.type, out.channel)] += 1
                if out.late:
                    late[out.type] += 1
                self._settle(out.settles)
            elif isinstance(out, Reject):
                stats.rejected += 1
                m.event_received(out.type, None)
                m.event_rejected(out.type, out.reason)
                m.dlq_record(out.reason)
                self._settle(out.message.position)
            else:
                stats.duplicates += 1
                m.event_received(out.type, None)
                m.event_duplicate(out.type)
                self._settle(out.message.position)
        for (type_, channel), n in accepted.items():
            stats.released += n
            m.event_received(type_, channel, n)
            m.event_accepted(type_, channel, n)
        for type_, n in late.items():
            stats.late += n
            m.event_late(type_, n)

    def _settle(self, position: InputPosition) -> None:
        topic, partition, offset = position
        # A TopicPartition is a named tuple: the plain tuple finds it, without building one.
        unsettled = self._unsettled.get((topic, partition))
        if unsettled is not None:
            unsettled.discard(offset)

    async def _commit(self) -> None:
        assert self._consumer is not None
        offsets: dict[TopicPartition, int] = {}
        for tp, nxt in self._next.items():
            unsettled = self._unsettled.get(tp)
            safe = min(unsettled) if unsettled else nxt
            if safe > self._committed.get(tp, 0):
                offsets[tp] = safe
        if offsets:
            await self._consumer.commit(offsets)
            self._committed.update(offsets)
            self.stats.commits += 1

    def lag(self) -> int:
        return self.ingress.buffered

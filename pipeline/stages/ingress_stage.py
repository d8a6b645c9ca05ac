"""The ingress stage on Kafka: input topics -> :class:`Ingress` -> canonical log.

Thin: decode and decide are in :mod:`sada.pipeline.domain.ingress`; this module
moves bytes. The stage is one member of the consumer group ``<group>-ingress``:
the input partitions are spread over the members, and a rebalance moves only
what it must (aiokafka's group protocol; the stage keeps no state of a
partition that a new owner would need, beyond the committed offset).

Every input message becomes one canonical-log record (the event forwarded, or
the input rejected with its reason), and after each batch a watermark goes to
every log partition. An input offset is committed only once its record is in
the log; a crash re-reads from the last commit, and the projector's ledger
absorbs what is logged twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from sada.infra import contracts, topics
from sada.infra.metrics import Metrics
from sada.infra.reading import partitions_of
from sada.infra.settings import Settings
from sada.pipeline.domain.config import Config
from sada.pipeline.domain.ingress import Forward, Ingress, InputMessage
from sada.pipeline.domain.records import InputPosition
from sada.pipeline.stages.record_batches import RecordBatches
from sada.pipeline.stages.stage import (
    SESSION_TIMEOUT_MS,
    KafkaStage,
)
from sada.producers.privacy import Pseudonymizer

log = logging.getLogger(__name__)


@dataclass(slots=True)
class IngressStats:
    received: int = 0
    forwarded: int = 0
    rejected: int = 0  # rejected here (validation); the projector decides the rest
    marks: int = 0
    commits: int = 0
    rebalances: int = 0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, stage: IngressStage) -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.stage._settle_before_revoke()

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self.stage._assigned(set(assigned))


class IngressStage(KafkaStage):
    def __init__(
        self,
        settings: Settings,
        config: Config,
        metrics: Metrics,
        bootstrap: str,
        session_ms: int = SESSION_TIMEOUT_MS,
    ):
        super().__init__(bootstrap, session_ms)
        self.settings = settings
        self.metrics = metrics
        self.stats = IngressStats()
        self.group = f"{settings.group}-ingress"
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
            max_future_seconds=settings.max_future_seconds,
            pseudonymize=(
                None
                if not settings.pseudonym_key
                else Pseudonymizer(settings.pseudonym_key.encode("utf-8")).apply
            ),
        )
        self.total = 0
        self._unsettled: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._handed: dict[TopicPartition, float] = {}  # when its records were last handed over
        self._writing: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", linger_ms=0, max_batch_size=262144
        )
        await self._producer.start()
        consumer = await self._start_group_consumer(self.group)
        # How many input partitions there are in all, whoever owns them.
        self.total = sum([len(await partitions_of(consumer, t)) for t in topics.INPUT_TOPICS])
        consumer.subscribe(list(topics.INPUT_TOPICS), listener=_Rebalance(self))
        self.state = "running"

    # -- membership ------------------------------------------------------------------

    def _assigned(self, assigned: set[TopicPartition]) -> None:
        self.stats.rebalances += 1
        for tp in list(self._unsettled):
            if tp not in assigned:
                self._unsettled.pop(tp, None)
                self._next.pop(tp, None)
                self._committed.pop(tp, None)
                self._handed.pop(tp, None)
        self.ingress.assign(((tp.topic, tp.partition) for tp in assigned), self.total, time.time())
        log.info("ingress owns %d of %d input partitions", len(assigned), self.total)

    async def _settle_before_revoke(self) -> None:
        """Before partitions move: finish the write in flight and commit what it settled."""
        if self._writing is not None:
            with contextlib.suppress(Exception):
                await self._writing
        with contextlib.suppress(KafkaError, IllegalStateError):
            await self._commit()

    def owned(self) -> list[tuple[str, int]]:
        return self.ingress.owned

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        last_commit = time.monotonic()
        while not self._stopping.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            if self._writing is not None and self._writing.done():
                self._writing.result()  # a failed write stops the stage here, not later
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
            outputs = self.ingress.offer_many(msgs, now)
            if self.ingress.marks_due(now, bool(msgs)):
                # After the batch's own records: a watermark covers what precedes it.
                outputs.extend(self.ingress.marks(now))
            if outputs:
                # One round in flight: this batch is written while the next is fetched,
                # and each round starts after the last one's acknowledgement, so a
                # watermark never overtakes the events it covers.
                if self._writing is not None:
                    await self._writing
                self._writing = asyncio.ensure_future(self._carry_out(outputs))
            if time.monotonic() - last_commit > 0.5:
                await self._commit()
                last_commit = time.monotonic()
        if self._writing is not None:
            await self._writing
        await self._commit()

    async def _note_backlog(
        self, consumer: AIOKafkaConsumer, handed: Iterable[TopicPartition], now: float
    ) -> None:
        """Mark the partitions that may hold records ingress has not seen: behind, not idle.

        Behind: the consumer's position is below the last fetch's high watermark,
        no fetch has answered for the partition yet, or none since records of it
        were last handed over. Only a fetch that finds nothing new lets idleness count.
        """
        for tp in handed:
            self._handed[tp] = now
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            polled = consumer.last_poll_timestamp(tp)
            try:
                behind = hw is not None and await consumer.position(tp) < hw
            except IllegalStateError:
                continue  # revoked meanwhile
            # A partition no fetch has answered for yet (just assigned, after a rebalance
            # or a start) may hold anything: it is not idle until the broker has said so.
            unheard = polled is None or (tp in self._handed and polled / 1000 <= self._handed[tp])
            if behind or unheard:
                self.ingress.backlogged((tp.topic, tp.partition), now)

    async def _carry_out(self, outputs: list[Forward]) -> None:
        """Append the records, in order within each log partition; settle their inputs.

        The watermarks go only once every record they cover is acknowledged. A
        batch that expires while the broker is away fails alone: the producer
        sends the partition's next batch all the same, and a watermark in it would
        reach the log ahead of the events that ingress re-reads and logs again.
        """
        assert self._producer is not None
        events = [out for out in outputs if out.settles is not None]
        marks = [out for out in outputs if out.settles is None]
        for part in (events, marks):
            log_records = RecordBatches(self._producer, topics.LOG)
            for out in part:
                await log_records.add(
                    out.log_partition, out.key.encode() if out.key else None, out.value
                )
            futures = await log_records.send()
            if futures:
                await asyncio.gather(*futures)
        m = self.metrics
        stats = self.stats
        for out in outputs:
            if out.settles is None:
                stats.marks += 1
                continue
            m.event_received(out.type or "unknown", None)
            if out.rejected:
                stats.rejected += 1
            else:
                stats.forwarded += 1
            self._settle(out.settles)

    def _settle(self, position: InputPosition) -> None:
        topic, partition, offset = position
        unsettled = self._unsettled.get(TopicPartition(topic, partition))
        if unsettled is not None:
            unsettled.discard(offset)

    async def _commit(self) -> None:
        assert self._consumer is not None
        offsets: dict[TopicPartition, int] = {}
        assignment = self._consumer.assignment()
        for tp, nxt in self._next.items():
            if tp not in assignment:
                continue
            unsettled = self._unsettled.get(tp)
            safe = min(unsettled) if unsettled else nxt
            if safe > self._committed.get(tp, -1):
                offsets[tp] = safe
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError as e:
            # A rebalance took the partitions; their new owner re-reads from the last
            # commit, and what this member logged meanwhile is absorbed by the ledger.
            log.info("ingress commit refused after a rebalance: %s", e)
            return
        self._committed.update(offsets)
        self.stats.commits += 1

    def lag(self) -> int:
        return sum(len(u) for u in self._unsettled.values())

    def describe(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "group": self.group,
            "owned": [f"{t}/{p}" for t, p in self.owned()],
            "received": self.stats.received,
            "forwarded": self.stats.forwarded,
            "rejected_here": self.stats.rejected,
            "rebalances": self.stats.rebalances,
            "unsettled": self.lag(),
        }

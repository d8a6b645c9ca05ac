"""The projector stage on Kafka: canonical log -> decisions -> store, escalations -> topic.

Each log partition has one :class:`Projector`; its checkpoint lives in the store,
written in the same transaction as the batch's effects, so the stage seeks to
the stored checkpoint on start and never depends on Kafka's committed offsets.
Escalations reach ``sada.escalations`` through an outbox: written with the
batch, published after commit, then marked published. A crash between publish
and mark publishes again with the same event ids (dedupable downstream).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from sada.infra import topics
from sada.pipeline.domain.config import Config
from sada.pipeline.domain.logcodec import dumps
from sada.pipeline.domain.outbound import escalation_event
from sada.pipeline.domain.ports import ProjectorStore
from sada.pipeline.domain.projector import BatchResult, Projector
from sada.pipeline.domain.rules import Rules
from sada.pipeline.stages.stage import FETCH_MAX_WAIT_MS, KafkaStage

log = logging.getLogger(__name__)


class DecisionMetrics(Protocol):
    """What the stage observes; :class:`~sada.infra.metrics.Metrics`, or a recorder of the calls."""

    def escalated(self, to_level: int, reason: str | None) -> None: ...

    def first_response(self, kind: str | None, business_hours: float) -> None: ...

    def resolved(self, kind: str | None, business_hours: float) -> None: ...

    def satisfaction(self, unit: str | None, rating: int) -> None: ...

    def decision_lag(self, seconds: float) -> None: ...


@dataclass(slots=True)
class ProjectorStats:
    applied: int = 0
    duplicates: int = 0
    escalations: int = 0
    published: int = 0
    batches: int = 0


class ProjectorStage(KafkaStage):
    def __init__(
        self, config: Config, store: ProjectorStore, metrics: DecisionMetrics, bootstrap: str
    ) -> None:
        super().__init__(bootstrap)
        self.rules = Rules.from_config(config)
        self.store = store
        self.metrics = metrics
        self.stats = ProjectorStats()
        self.projectors: dict[int, Projector] = {}
        # Called after every applied fetch (the projector process reports to its parent).
        self.on_batch: Callable[[], Awaitable[None]] | None = None
        # Whether the outbox may hold unpublished escalations: asking the store after
        # every batch cost a query and a thread hop, though most batches escalate nothing.
        self._outbox_dirty = True

    async def start(self) -> None:
        self.store.checkpoint_in_background()  # its commits are on the escalation path
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=0)
        await self._producer.start()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        await consumer.start()
        self._consumer = consumer
        parts = sorted(consumer.partitions_for_topic(topics.LOG) or ())
        tps = [TopicPartition(topics.LOG, p) for p in parts]
        consumer.assign(tps)
        for tp in tps:
            self.projectors[tp.partition] = Projector(self.rules, self.store, tp.partition)
            consumer.seek(tp, self.projectors[tp.partition].next_offset)
        await self._publish_outbox()
        self.state = "running"

    async def run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        while not self._stopping.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            if not batch:
                continue
            work = [
                (tp, [(m.offset, m.value) for m in msgs], [m.timestamp for m in msgs])
                for tp, msgs in sorted(batch.items(), key=lambda kv: kv[0].partition)
                if msgs
            ]
            # Every partition of the fetch in one trip to the worker thread: a trip
            # per partition cost more than small batches' own work.
            outcomes = await asyncio.to_thread(self._apply_all, work)
            for (tp, _records, stamps), outcome in zip(work, outcomes, strict=True):
                if isinstance(outcome, BatchResult):
                    self._observe(outcome, stamps)
                else:
                    await self._recover(tp, outcome)
            if self._outbox_dirty:
                await self._publish_outbox()
            if self.on_batch is not None:
                await self.on_batch()

    def _apply_all(
        self, work: list[tuple[TopicPartition, list[tuple[int, bytes]], list[int]]]
    ) -> list[BatchResult | Exception]:
        outcomes: list[BatchResult | Exception] = []
        for tp, records, _stamps in work:
            try:
                outcomes.append(self.projectors[tp.partition].apply_batch(records))
            except Exception as e:  # this partition recovers; the others' batches stand
                outcomes.append(e)
        return outcomes

    async def _recover(self, tp: TopicPartition, error: Exception) -> None:
        """A batch failed: the fold may be ahead of the store, so rebuild it from the store.

        Then re-read the partition from the stored checkpoint.
        """
        log.error(
            "partition %d: batch failed; reloading from the store",
            tp.partition,
            exc_info=error,
        )
        fresh = await asyncio.to_thread(Projector, self.rules, self.store, tp.partition)
        self.projectors[tp.partition] = fresh
        assert self._consumer is not None
        self._consumer.seek(tp, fresh.next_offset)
        self._outbox_dirty = True
        await asyncio.sleep(0.5)  # a database that just failed gets a moment before the retry

    def _observe(self, result: BatchResult, stamps: list[int]) -> None:
        m = self.metrics
        self.stats.batches += 1
        self.stats.applied += result.applied
        self.stats.duplicates += result.duplicates
        self.stats.escalations += len(result.escalations)
        if result.escalations:
            self._outbox_dirty = True
        for esc in result.escalations:
            m.escalated(esc.to_level, esc.reason)
        for kind, hours in result.first_response_hours:
            m.first_response(kind, hours)
        for kind, hours in result.resolution_hours:
            m.resolved(kind, hours)
        for unit, rating in result.satisfaction:
            m.satisfaction(unit, rating)
        if stamps and result.applied:
            now_ms = time.time() * 1000
            m.decision_lag(max(0.0, (now_ms - stamps[-1]) / 1000))

    async def _publish_outbox(self) -> None:
        assert self._producer is not None
        while True:
            todo = await asyncio.to_thread(self.store.unpublished_escalations, 1000)
            if not todo:
                self._outbox_dirty = False
                return
            futures = [
                await self._producer.send(
                    topics.ESCALATIONS,
                    value=dumps(escalation_event(esc)),
                    key=esc.submission_id.encode(),
                )
                for esc in todo
            ]
            await asyncio.gather(*futures)
            await asyncio.to_thread(self.store.mark_published, [e.event_id for e in todo])
            self.stats.published += len(todo)

    async def lag(self) -> int:
        """Canonical-log records not yet applied, over all partitions.

        From the high watermark of the last fetch, not ListOffsets (see
        :func:`~sada.pipeline.stages.ingress_stage.read_topic_to_end`).
        """
        if self._consumer is None:
            return 0
        total = 0
        for partition, projector in self.projectors.items():
            hw = self._consumer.highwater(TopicPartition(topics.LOG, partition))
            if hw is not None:
                total += max(0, hw - projector.next_offset)
        return total

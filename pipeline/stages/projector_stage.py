"""The projector stage on Kafka: canonical log -> decisions -> store, outboxes -> topics.

The stage is one member of the consumer group ``<group>-projector``: the log
partitions are spread over the members. Each partition it owns has one
:class:`Projector`; its checkpoint lives in the store, written in the same
transaction as the batch's effects, so on being assigned a partition the stage
seeks to the stored checkpoint and never depends on Kafka's committed offsets.
A member that lost a partition without knowing (a zombie) is fenced by the
store: its next batch starts below the stored checkpoint and is refused.

Escalations reach ``sada.escalations``, rejected inputs ``sada.dlq`` and
notifications ``sada.notifications`` (keyed by recipient; marking them published
also queues their webhook deliveries) through outboxes: written with the
batch, published after commit, then marked published. A crash between
publish and mark publishes again with the same ids (dedupable downstream).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from sada.infra import topics
from sada.pipeline.domain.config import Config
from sada.pipeline.domain.errors import FencedError
from sada.pipeline.domain.logcodec import dumps
from sada.pipeline.domain.outbound import escalation_event, notification_event
from sada.pipeline.domain.ports import ProjectorStore, Rejection
from sada.pipeline.domain.projector import BatchResult, Projector
from sada.pipeline.domain.rules import Rules
from sada.pipeline.domain.webhooks import routes
from sada.pipeline.stages.stage import (
    FETCH_MAX_WAIT_MS,
    SESSION_TIMEOUT_MS,
    KafkaStage,
)

log = logging.getLogger(__name__)


class DecisionMetrics(Protocol):
    """What the stage observes; :class:`~sada.infra.metrics.Metrics`, or a recorder of the calls."""

    def escalated(self, to_level: int, reason: str | None) -> None: ...

    def first_response(self, kind: str | None, business_hours: float) -> None: ...

    def resolved(self, kind: str | None, business_hours: float) -> None: ...

    def satisfaction(self, unit: str | None, rating: int) -> None: ...

    def decision_lag(self, seconds: float) -> None: ...

    def event_accepted(
        self, type_: str | None, channel: str | None = None, amount: int = 1
    ) -> None: ...

    def event_rejected(self, type_: str | None, reason: str | None) -> None: ...

    def event_duplicate(self, type_: str | None) -> None: ...

    def event_late(self, type_: str | None, amount: int = 1) -> None: ...

    def dlq_record(self, reason: str | None) -> None: ...


@dataclass(slots=True)
class ProjectorStats:
    applied: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    late: int = 0
    held: int = 0
    escalations: int = 0
    published: int = 0
    dlq: int = 0
    notified: int = 0
    batches: int = 0
    rebalances: int = 0
    fenced: int = 0


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, stage: ProjectorStage) -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.stage._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self.stage._assigned(set(assigned))


class ProjectorStage(KafkaStage):
    def __init__(
        self,
        config: Config,
        store: ProjectorStore,
        metrics: DecisionMetrics,
        bootstrap: str,
        group: str = "sada",
        session_ms: int = SESSION_TIMEOUT_MS,
    ) -> None:
        super().__init__(bootstrap, session_ms)
        self.group = f"{group}-projector"
        # Held while a fetch is applied, so that a rebalance waits for it.
        self._busy = asyncio.Lock()
        self.rules = Rules.from_config(config)
        self.webhooks = config.webhooks
        self.store = store
        self.metrics = metrics
        self.stats = ProjectorStats()
        self.projectors: dict[int, Projector] = {}
        # Called after every applied fetch (the projector process reports to its parent).
        self.on_batch: Callable[[], Awaitable[None]] | None = None
        # Whether the outbox may hold unpublished escalations: asking the store after
        # every batch cost a query and a thread hop, though most batches escalate nothing.
        self._outbox_dirty = True
        self.failures = 0  # batches failed in a row: the backoff before the next try
        self.degraded: str | None = None  # why the store cannot be used, while it cannot

    async def start(self) -> None:
        self.store.checkpoint_in_background()  # its commits are on the escalation path
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=0)
        await self._producer.start()
        consumer = await self._start_group_consumer(self.group)
        consumer.subscribe([topics.LOG], listener=_Rebalance(self))
        self.state = "running"

    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        """New partitions: build each one's projector from the store, seek to its checkpoint."""
        async with self._busy:
            self.stats.rebalances += 1
            assert self._consumer is not None
            for tp in sorted(assigned, key=lambda tp: tp.partition):
                if tp.partition not in self.projectors:
                    projector = await asyncio.to_thread(
                        Projector, self.rules, self.store, tp.partition
                    )
                    self.projectors[tp.partition] = projector
                self._consumer.seek(tp, self.projectors[tp.partition].next_offset)
            self._outbox_dirty = True
            log.info("projector owns log partitions %s", sorted(self.projectors))

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._busy:
            for tp in revoked:
                self.projectors.pop(tp.partition, None)

    def owned(self) -> list[int]:
        return sorted(self.projectors)

    async def run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        while not self._stopping.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            if not batch:
                if self._outbox_dirty:
                    await self._publish_outbox()
                continue
            async with self._busy:
                work = [
                    (tp, [(m.offset, m.value) for m in msgs], [m.timestamp for m in msgs])
                    for tp, msgs in sorted(batch.items(), key=lambda kv: kv[0].partition)
                    if msgs and tp.partition in self.projectors
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
        if isinstance(error, FencedError):
            self.stats.fenced += 1
            log.warning("partition %d: %s; reloading from the store", tp.partition, error)
        else:
            self.failures += 1
            log.error(
                "partition %d: batch failed; reloading from the store",
                tp.partition,
                exc_info=error,
            )
        while not self._stopping.is_set():
            try:
                fresh = await asyncio.to_thread(Projector, self.rules, self.store, tp.partition)
                break
            except Exception as e:  # the database is still away: wait, with backoff
                self.degraded = f"{type(e).__name__}: {e}"
                await asyncio.sleep(min(0.5 * 2 ** min(self.failures, 5), 10.0))
                self.failures += 1
        else:
            return
        self.projectors[tp.partition] = fresh
        assert self._consumer is not None
        self._consumer.seek(tp, fresh.next_offset)
        self._outbox_dirty = True
        await asyncio.sleep(min(0.5 * 2 ** min(self.failures - 1, 5), 10.0) if self.failures else 0)

    def _observe(self, result: BatchResult, stamps: list[int]) -> None:
        m = self.metrics
        stats = self.stats
        self.failures = 0
        self.degraded = None
        stats.batches += 1
        stats.applied += result.applied
        stats.duplicates += result.duplicates
        stats.escalations += len(result.escalations)
        stats.accepted += len(result.accepted)
        stats.rejected += len(result.rejected)
        stats.late += len(result.late)
        stats.held = sum(p.held for p in self.projectors.values())
        if result.escalations or result.rejected or result.notifications:
            self._outbox_dirty = True
        for (type_, channel), n in Counter(result.accepted).items():
            m.event_accepted(type_, channel or None, n)
        for type_, reason in result.rejected:
            m.event_rejected(type_, reason)
        for _ in range(result.duplicates):
            m.event_duplicate(None)
        for type_, n in Counter(result.late).items():
            m.event_late(type_, n)
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
        owned = set(self.projectors)
        while True:
            todo = await asyncio.to_thread(self.store.unpublished_escalations, 1000, owned)
            if not todo:
                break
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
        while True:
            rejected = await asyncio.to_thread(self.store.unpublished_rejections, 1000, owned)
            if not rejected:
                break
            originals = await self._originals([r.src for r in rejected])
            futures = []
            for r in rejected:
                # The input unchanged, byte for byte, with its key; what the log kept if
                # the input topic no longer has it.
                key, value = originals.get(r.src, (None, r.value))
                futures.append(
                    await self._producer.send(
                        topics.DLQ, value=value, key=key, headers=dlq_headers(r)
                    )
                )
            await asyncio.gather(*futures)
            await asyncio.to_thread(self.store.mark_rejections_published, [r.key for r in rejected])
            for r in rejected:
                self.metrics.dlq_record(r.reason)
            self.stats.dlq += len(rejected)
        await self._publish_notifications(owned)
        self._outbox_dirty = False

    async def _publish_notifications(self, owned: set[int]) -> None:
        assert self._producer is not None
        while True:
            todo = await asyncio.to_thread(self.store.unpublished_notifications, 1000, owned)
            if not todo:
                break
            futures = [
                await self._producer.send(
                    topics.NOTIFICATIONS,
                    value=dumps(notification_event(n)),
                    key=n.recipient.encode(),
                )
                for n in todo
            ]
            await asyncio.gather(*futures)
            parent_of = self.rules.parent_of
            routed = {n.id: routes(self.webhooks, n, parent_of) for n in todo}
            await asyncio.to_thread(
                self.store.mark_notifications_published, [n.id for n in todo], routed
            )
            self.stats.notified += len(todo)

    async def _originals(
        self, positions: list[tuple[str, int, int]]
    ) -> dict[tuple[str, int, int], tuple[bytes | None, bytes | None]]:
        """The input messages at ``positions`` (key, value), read back from the input topics."""
        wanted: dict[TopicPartition, set[int]] = {}
        for topic, partition, offset in positions:
            wanted.setdefault(TopicPartition(topic, partition), set()).add(offset)
        out: dict[tuple[str, int, int], tuple[bytes | None, bytes | None]] = {}
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        await reader.start()
        try:
            reader.assign(list(wanted))
            for tp, offsets in wanted.items():
                reader.seek(tp, min(offsets))
                last = max(offsets)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    fetched = await reader.getmany(tp, timeout_ms=200, max_records=1000)
                    msgs = fetched.get(tp, [])
                    for m in msgs:
                        if m.offset in offsets:
                            out[(tp.topic, tp.partition, m.offset)] = (m.key, m.value)
                    if (msgs and msgs[-1].offset >= last) or (
                        not msgs and await reader.position(tp) > last
                    ):
                        break
        finally:
            await reader.stop()
        return out

    async def lag(self) -> int:
        """Canonical-log records not yet applied, over all partitions.

        From the high watermark of the last fetch, not ListOffsets (see
        :func:`~sada.infra.reading.read_topic_to_end`).
        """
        if self._consumer is None:
            return 0
        total = 0
        for partition, projector in self.projectors.items():
            hw = self._consumer.highwater(TopicPartition(topics.LOG, partition))
            if hw is not None:
                total += max(0, hw - projector.next_offset)
        return total


DETAIL_MAX = 500


def dlq_headers(r: Rejection) -> list[tuple[str, bytes]]:
    """The headers of a ``sada.dlq`` record: the reason, and where the input came from."""
    return [
        ("sada.reason", r.reason.encode()),
        ("sada.detail", r.detail[:DETAIL_MAX].encode("utf-8", "replace")),
        ("sada.topic", r.src[0].encode()),
        ("sada.partition", str(r.src[1]).encode()),
        ("sada.offset", str(r.src[2]).encode()),
        ("sada.key", r.key.encode("utf-8", "replace")),
    ]

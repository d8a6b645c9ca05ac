"""Reading topics: their partitions as the cluster knows them, and a whole topic to its end."""

from __future__ import annotations

import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from sada.pipeline.domain.errors import BrokerError


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    """The partitions of ``topic``, asked of the cluster.

    A new client knows only the topics it was asked about: Tansu tells every
    topic in its first metadata answer, Apache Kafka none, so
    ``partitions_for_topic`` alone answers None there. ``topics()`` fetches
    the metadata but keeps it apart from the client's own view, hence this.
    """
    cluster = await consumer._client.fetch_all_metadata()
    return sorted(cluster.partitions_for_topic(topic) or ())


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
        parts = await partitions_of(consumer, topic)
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

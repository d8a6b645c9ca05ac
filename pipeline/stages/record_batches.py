"""Records for one topic written as record batches built directly, one open batch per partition.

aiokafka's ``send`` costs about 12 µs of CPU per record (a future, a
partitioner call and a trip through the accumulator each); appending to a
batch built with ``create_batch`` costs about 2. Whatever writes many records
at once (ingress's canonical log, the benchmark's raw rate) goes this way.
Order within a partition is the order of :meth:`RecordBatches.add`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from aiokafka import AIOKafkaProducer


class RecordBatches:
    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._open: dict[int, Any] = {}  # partition -> its BatchBuilder
        self._sent: list[Awaitable[Any]] = []

    async def add(self, partition: int, key: bytes | None, value: bytes) -> None:
        builder = self._open.get(partition)
        if builder is None:
            builder = self._open[partition] = self._producer.create_batch()
        if builder.append(key=key, value=value, timestamp=None) is None:  # full: send it
            self._sent.append(
                await self._producer.send_batch(builder, self._topic, partition=partition)
            )
            builder = self._open[partition] = self._producer.create_batch()
            builder.append(key=key, value=value, timestamp=None)

    async def send(self) -> list[Awaitable[Any]]:
        """Send the open batches; the delivery futures of every batch sent since the last call."""
        for partition, builder in self._open.items():
            if builder.record_count():
                self._sent.append(
                    await self._producer.send_batch(builder, self._topic, partition=partition)
                )
        self._open.clear()
        sent, self._sent = self._sent, []
        return sent

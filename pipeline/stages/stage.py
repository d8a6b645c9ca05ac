"""What every Kafka stage of the worker shares: its life cycle (state, stop, close)."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

# How long a stage's fetch may wait for records. Some brokers (Tansu among them)
# hold a fetch for the whole wait even when records are ready, so Kafka's default
# of 500 ms became the floor of every escalation's latency; 20 ms costs a few dozen
# empty fetches a second while idle.
FETCH_MAX_WAIT_MS = 20


class KafkaStage:
    """A stage owning one consumer and one producer; ``run`` loops until ``stop``."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.state = "starting"
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._stopping = asyncio.Event()

    async def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        self.state = "stopped"
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

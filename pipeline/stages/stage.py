"""What every Kafka stage of the worker shares: its life cycle (state, stop, close)."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

# How long a stage's fetch may wait for records. Some brokers (Tansu among them)
# hold a fetch for the whole wait even when records are ready, so Kafka's default
# of 500 ms became the floor of every escalation's latency; 20 ms costs a few dozen
# empty fetches a second while idle.
FETCH_MAX_WAIT_MS = 20

# Group membership: a member that stops heartbeating loses its partitions after
# its session timeout, so a killed worker's work moves within seconds. Apache
# Kafka refuses sessions under 6 s by default (group.min.session.timeout.ms);
# the embedded broker holds every join for half the session, so there a shorter
# one makes starts and rebalances quicker.
SESSION_TIMEOUT_MS = 6000
EMBEDDED_SESSION_TIMEOUT_MS = 2000
REBALANCE_TIMEOUT_MS = 10000


def group_timeouts(session_ms: int = SESSION_TIMEOUT_MS) -> dict[str, int]:
    """The consumer-group timings every stage uses."""
    return {
        "session_timeout_ms": session_ms,
        "heartbeat_interval_ms": max(100, session_ms // 4),
        "rebalance_timeout_ms": REBALANCE_TIMEOUT_MS,
    }


class KafkaStage:
    """A stage owning one consumer and one producer; ``run`` loops until ``stop``."""

    def __init__(self, bootstrap: str, session_ms: int = SESSION_TIMEOUT_MS) -> None:
        self.bootstrap = bootstrap
        self.session_ms = session_ms
        self.state = "starting"
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._stopping = asyncio.Event()

    async def _start_group_consumer(self, group: str) -> AIOKafkaConsumer:
        """The stage's consumer, started, in ``group``: offsets committed by hand only."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            **group_timeouts(self.session_ms),
        )
        await consumer.start()
        self._consumer = consumer
        return consumer

    async def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        self.state = "stopped"
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    def silent_for(self) -> float:
        """Seconds since the broker last answered a fetch of this stage's partitions.

        0 while it owns none (nothing to tell by). A stage whose broker stopped
        answering goes on polling without an error, so health asks this.
        """
        consumer = self._consumer
        if consumer is None:
            return 0.0
        stamps = [consumer.last_poll_timestamp(tp) for tp in consumer.assignment()]
        known = [s for s in stamps if s]
        if not known:
            return 0.0
        return max(0.0, time.time() - float(max(known)) / 1000)

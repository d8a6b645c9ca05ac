"""Apache Kafka itself (KRaft, one node; :mod:`kafka_support`), with the clients Sada uses.

Records produced with kafka-python are read back with aiokafka; topics are
created with four partitions, explicitly and automatically; a broker killed
with SIGKILL and started again on its log directory still has every record
and committed offset. One test pins down what Apache Kafka answers to
ListOffsets(latest), where the embedded broker (Tansu) answers differently.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka_support import ApacheKafka, KafkaStartError, kafka_libs

Record = tuple[int, int, bytes | None, bytes]  # partition, offset, key, value


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def produce(
    bootstrap: str,
    topic: str,
    records: list[tuple[bytes, bytes]],
    *,
    partition: int | None = None,
    linger_ms: int = 0,
) -> list[tuple[int, int]]:
    """Send ``(key, value)`` pairs with kafka-python, acks=all; their (partition, offset)s."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=linger_ms,
        batch_size=1 << 20,
        retries=10,
    )
    try:
        futures = [
            producer.send(topic, key=key, value=value, partition=partition)
            for key, value in records
        ]
        producer.flush(timeout=60)
        placed = [future.get(timeout=60) for future in futures]
    finally:
        producer.close(timeout=10)
    return [(meta.partition, meta.offset) for meta in placed]


async def _consume(bootstrap: str, topic: str, count: int, timeout: float) -> list[Record]:
    # No group: a subscription without one is given every partition of the topic.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        got: list[Record] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"read {len(got)} of {count} records from {topic} within {timeout}s"
                )
            batches = await consumer.getmany(timeout_ms=int(min(remaining, 1.0) * 1000))
            for tp, messages in batches.items():
                got.extend((tp.partition, m.offset, m.key, m.value) for m in messages)
        return got
    finally:
        await consumer.stop()


def consume(bootstrap: str, topic: str, count: int, timeout: float = 60.0) -> list[Record]:
    """Read ``count`` records of ``topic`` from its beginning with aiokafka (no group)."""
    return asyncio.run(_consume(bootstrap, topic, count, timeout))


def describe_partitions(bootstrap: str, topic: str) -> list[dict[str, object]]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    try:
        [described] = admin.describe_topics([topic])
    finally:
        admin.close()
    assert described["error_code"] == 0, described
    partitions: list[dict[str, object]] = described["partitions"]
    return sorted(partitions, key=lambda p: int(str(p["partition_index"])))


def by_partition(records: list[Record]) -> dict[int, list[Record]]:
    grouped: dict[int, list[Record]] = defaultdict(list)
    for record in records:
        grouped[record[0]].append(record)
    return dict(grouped)


# --- tests ----------------------------------------------------------------------------


def test_records_from_kafka_python_are_read_back_by_aiokafka_in_partition_order(
    kafka: str,
) -> None:
    topic = unique("apache-roundtrip")
    sent = [(f"key-{i % 7}".encode(), f"value-{i}".encode()) for i in range(60)]
    placed = produce(kafka, topic, sent)

    got = consume(kafka, topic, len(sent))

    assert len(got) == len(sent)
    assert sorted(got) == sorted((p, o, k, v) for (p, o), (k, v) in zip(placed, sent, strict=True))
    for records in by_partition(got).values():
        offsets = [offset for _, offset, _, _ in records]
        assert offsets == list(range(len(records)))  # dense, in order, from 0
    # The default partitioner puts one key in one partition.
    partitions_of_key: dict[bytes | None, set[int]] = defaultdict(set)
    for partition, _, key, _ in got:
        partitions_of_key[key].add(partition)
    assert all(len(ps) == 1 for ps in partitions_of_key.values())


def test_created_topic_has_four_partitions_led_by_the_one_node(kafka: str) -> None:
    topic = unique("apache-created")
    admin = KafkaAdminClient(bootstrap_servers=kafka, request_timeout_ms=30000)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    finally:
        admin.close()

    partitions = describe_partitions(kafka, topic)

    assert [p["partition_index"] for p in partitions] == [0, 1, 2, 3]
    assert all(p["leader_id"] == 1 and p["replica_nodes"] == [1] for p in partitions)
    assert all(p["isr_nodes"] == [1] for p in partitions)


def test_a_topic_created_by_producing_to_it_has_num_partitions_four(kafka: str) -> None:
    topic = unique("apache-auto")
    produce(kafka, topic, [(b"k", b"v")])

    assert len(describe_partitions(kafka, topic)) == 4


def test_list_offsets_latest_is_the_high_watermark_after_a_multi_record_batch(
    kafka: str,
) -> None:
    """Apache Kafka answers ListOffsets(latest) with the high watermark: the next offset.

    Two record batches, of five records and of three (one linger window
    each), go to one partition. Tansu answers the last batch's base offset + 1
    there, 6, short of the end; Apache Kafka answers the offset after the last
    record, 8, which is the high watermark its fetch responses carry.
    """
    topic = unique("apache-hwm")
    first = produce(
        kafka, topic, [(b"k", b"a%d" % i) for i in range(5)], partition=0, linger_ms=200
    )
    second = produce(
        kafka, topic, [(b"k", b"b%d" % i) for i in range(3)], partition=0, linger_ms=200
    )
    assert [offset for _, offset in first + second] == list(range(8))

    async def offsets() -> tuple[int, int, int | None]:
        tp = TopicPartition(topic, 0)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            read = 0
            deadline = time.monotonic() + 30
            while read < 8 and time.monotonic() < deadline:
                read += len((await consumer.getmany(tp, timeout_ms=1000)).get(tp, []))
            highwater: int | None = consumer.highwater(tp)
            return end, read, highwater
        finally:
            await consumer.stop()

    end, read, highwater = asyncio.run(offsets())

    assert read == 8
    assert end == 8
    assert highwater == end


def test_a_killed_broker_restarted_on_its_log_dir_keeps_records_and_committed_offsets(
    kafka_broker_factory: Callable[[], ApacheKafka],
) -> None:
    node = kafka_broker_factory()
    bootstrap = node.bootstrap
    topic = unique("apache-restart")
    group = unique("apache-restart-group")
    sent = [(f"key-{i}".encode(), f"before-{i}".encode()) for i in range(40)]
    produce(bootstrap, topic, sent)
    before = consume(bootstrap, topic, len(sent))
    commit(bootstrap, group, {(topic, p): len(rs) for p, rs in by_partition(before).items()})

    node.kill()
    assert not node.running()
    node.start()

    assert node.bootstrap == bootstrap  # same ports, so clients reconnect as they would
    after = consume(bootstrap, topic, len(sent))
    assert sorted(after) == sorted(before)
    assert committed(bootstrap, group, topic) == {
        p: len(rs) for p, rs in by_partition(before).items()
    }
    # The log goes on where it stopped.
    [(partition, offset)] = produce(bootstrap, topic, [(b"key-0", b"after")])
    assert offset == len(by_partition(before)[partition])

    # A controlled shutdown (SIGTERM) and a start keep it all too.
    node.stop()
    assert not node.running()
    node.start()
    assert sorted(consume(bootstrap, topic, len(sent) + 1)) == sorted(
        [*before, (partition, offset, b"key-0", b"after")]
    )


def commit(bootstrap: str, group: str, offsets: dict[tuple[str, int], int]) -> None:
    async def run() -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            tps = {TopicPartition(t, p): o for (t, p), o in offsets.items()}
            consumer.assign(list(tps))
            await consumer.commit(tps)
        finally:
            await consumer.stop()

    asyncio.run(run())


def committed(bootstrap: str, group: str, topic: str, partitions: int = 4) -> dict[int, int]:
    """The offsets ``group`` has committed for ``topic``, by partition."""

    async def run() -> dict[int, int]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            found = {
                p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)
            }
        finally:
            await consumer.stop()
        return {p: offset for p, offset in found.items() if offset is not None}

    return asyncio.run(run())


def test_without_jars_the_helper_fails_and_says_how_to_fetch_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(KafkaStartError, match=r"no Apache Kafka jars.*ops/kafka/fetch\.sh"):
        kafka_libs({"SADA_KAFKA_LIBS": str(tmp_path)})
    with pytest.raises(KafkaStartError, match=r"nowhere/libs: run ops/kafka/fetch\.sh"):
        kafka_libs({"SADA_KAFKA_HOME": str(tmp_path / "nowhere")})
    monkeypatch.setenv("SADA_KAFKA_LIBS", str(tmp_path))
    node = ApacheKafka(tmp_path / "node")
    with pytest.raises(KafkaStartError, match=r"ops/kafka/fetch\.sh"):
        node.start()
    assert not node.running()

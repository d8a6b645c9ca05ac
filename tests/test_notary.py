"""The notary stage on a broker: signs what grew, on its timer and on demand, publishes each once.

Runs on the embedded broker; the checkpoints it publishes are read back from
``sada.checkpoints`` and must be the store's signed notes, verifiable with the
deployment's key.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from proof_support import DEPLOYMENT, PARTITIONS, make_deployment

from sada.infra import topics
from sada.infra.topics import ensure_topics
from sada.pipeline.domain.note import open_note
from sada.pipeline.domain.tlog_checkpoint import TreeHead
from sada.pipeline.stages.notary_stage import NotaryStage

pytestmark = pytest.mark.broker


async def _published(bootstrap: str, want: int, deadline: float) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = sorted(consumer.partitions_for_topic(topics.CHECKPOINTS) or ())
        tps = [TopicPartition(topics.CHECKPOINTS, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        got: list[tuple[bytes, bytes]] = []
        while len(got) < want and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                got.extend((m.key or b"", m.value or b"") for m in msgs)
        return got
    finally:
        await consumer.stop()


def test_the_notary_signs_on_its_timer_and_publishes_every_checkpoint_once(
    broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A deployment name of this test's own: the session's broker is shared.
    deployment = f"{DEPLOYMENT}.{tmp_path.name}"
    d = make_deployment(tmp_path, monkeypatch)
    ensure_topics(broker, PARTITIONS)
    store = d.open()
    store.register_signing_key(d.signer.verifier, deployment)
    d.feed(0.5, store)

    async def main() -> list[tuple[bytes, bytes]]:
        notary = NotaryStage(store, d.signer, deployment, broker, interval=0.2)
        await notary.start()  # signs the heads there are at once
        assert notary.signed == PARTITIONS and notary.published == PARTITIONS
        runner = asyncio.create_task(notary.run())
        try:
            await asyncio.to_thread(d.feed, 1.0, store)
            deadline = time.monotonic() + 30
            while notary.published < 2 * PARTITIONS and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert notary.published == 2 * PARTITIONS
            # Nothing grew since: further rounds sign nothing.
            assert await notary.sign_now() == []
        finally:
            await notary.stop()
            await runner
            await notary.close()
        return await _published(broker, 2 * PARTITIONS, time.monotonic() + 30)

    try:
        got = asyncio.run(main())
        ours = [(k, v) for k, v in got if k.decode().startswith(f"{deployment}/archive/")]
        stored = {c.note for c in store.signed_checkpoints(None, None, None)}
        assert len(stored) == 2 * PARTITIONS
        assert sorted(v.decode() for _, v in ours) == sorted(stored)  # each once
        assert store.unpublished_checkpoints() == []
        for key, value in ours:
            head = TreeHead.parse(open_note(value.decode(), [d.signer.verifier]).text)
            assert key.decode() == head.origin
    finally:
        store.close()

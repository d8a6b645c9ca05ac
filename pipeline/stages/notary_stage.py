"""The notary stage: signs the archive's tree heads and publishes them to ``sada.checkpoints``.

Every ``interval`` seconds (and whenever :meth:`NotaryStage.sign_now` is
called, e.g. for a receipt whose record no checkpoint covers yet) it reads
the committed tree head of every partition, signs those that grew since the
last checkpoint of this key, stores them, then publishes what the store has
not seen published (an outbox, as for escalations: a crash between publish
and mark publishes the same note again, which is harmless). So while records
arrive a checkpoint follows at least once per ``interval``; while nothing
arrives, nothing new is signed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from sada.infra import topics
from sada.pipeline.domain.notary import (
    NotaryStore,
    SignedCheckpoint,
    due,
    key_label,
    sign_head,
)
from sada.pipeline.domain.note import Signer
from sada.pipeline.domain.tlog_checkpoint import origin
from sada.pipeline.stages.stage import KafkaStage

log = logging.getLogger(__name__)


class NotaryStage(KafkaStage):
    def __init__(
        self,
        store: NotaryStore,
        signer: Signer,
        deployment: str,
        bootstrap: str,
        interval: float,
    ) -> None:
        super().__init__(bootstrap)
        self.store = store
        self.signer = signer
        self.deployment = deployment
        self.interval = interval
        self.signed = 0
        self.published = 0
        self._lock = asyncio.Lock()  # one signing round at a time: the timer's or a caller's

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await self._producer.start()
        await self.sign_now()
        self.state = "running"

    async def run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)
            if self._stopping.is_set():
                return
            await self.sign_now()

    async def sign_now(self) -> list[SignedCheckpoint]:
        """Sign every head that grew, store and publish; the checkpoints signed.

        Signing and storing must succeed; publishing the copy may fail (the
        broker away) and is retried from the outbox on the next round.
        """
        async with self._lock:
            made = await asyncio.to_thread(self._sign_due)
            try:
                await self._publish()
            except KafkaError as e:
                log.warning("publishing checkpoints failed, retried next round: %s", e)
        return made

    def _sign_due(self) -> list[SignedCheckpoint]:
        heads = self.store.tree_heads()
        todo = due(heads, self.store.latest_signed_sizes(key_label(self.signer)))
        now = datetime.now(UTC)
        made = [sign_head(self.signer, self.deployment, head, now) for head in todo]
        if made:
            self.store.add_signed_checkpoints(made)
            self.signed += len(made)
        return made

    async def _publish(self) -> None:
        producer = self._producer
        if producer is None:
            return
        while True:
            todo = await asyncio.to_thread(self.store.unpublished_checkpoints, 500)
            if not todo:
                return
            futures = [
                await producer.send(
                    topics.CHECKPOINTS,
                    value=c.note.encode(),
                    key=origin(self.deployment, c.partition).encode(),
                    headers=[("content-type", b"text/plain; charset=utf-8")],
                )
                for c in todo
            ]
            await asyncio.gather(*futures)
            seqs = [c.seq for c in todo if c.seq is not None]
            await asyncio.to_thread(self.store.mark_checkpoints_published, seqs)
            self.published += len(todo)

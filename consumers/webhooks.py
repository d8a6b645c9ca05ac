"""Webhook delivery: due deliveries POSTed, signed per the Standard Webhooks specification.

One task per endpoint, so a slow or dead endpoint only ever waits on itself;
the pipeline never waits on any (deliveries are queued in the store when a
notification is published). Each attempt sends the notification's CloudEvent
with ``webhook-id`` (the notification id, the same on every attempt),
``webhook-timestamp`` and ``webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">``. 2xx is delivered; 410 disables the endpoint
(the delivery is kept as failed, to resend once enabled again); anything else
is retried with exponential backoff and jitter, up to an hour apart, until the
delivery is older than the give-up age. Each attempt first claims its row
with a lease, so several workers sharing a database never both send it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import aiohttp

from sada.consumers.store import SqlStore
from sada.pipeline.domain.logcodec import dumps
from sada.pipeline.domain.notify import Notification
from sada.pipeline.domain.outbound import notification_event
from sada.pipeline.domain.webhooks import Webhook

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 3600.0


class DeliveryMetrics(Protocol):
    def delivered(self, endpoint: str, seconds: float) -> None: ...

    def failed(self, endpoint: str, seconds: float) -> None: ...

    def oldest_undelivered(self, endpoint: str, seconds: float) -> None: ...


@dataclass(frozen=True)
class DeliveryPolicy:
    backoff_seconds: float = 5.0  # the first retry's delay; doubles per attempt
    give_up_seconds: float = 24 * 3600.0
    timeout_seconds: float = 10.0
    poll_seconds: float = 0.5  # how often an idle endpoint looks for due deliveries


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value of one attempt."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def backoff(policy: DeliveryPolicy, attempts: int, rng: random.Random) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: full-ish jitter."""
    ceiling = min(MAX_BACKOFF_SECONDS, policy.backoff_seconds * 2.0 ** min(attempts - 1, 30))
    return float(ceiling * rng.uniform(0.5, 1.0))


class Deliverer:
    def __init__(
        self,
        store: SqlStore,
        hooks: tuple[Webhook, ...],
        keys: Mapping[str, bytes],
        metrics: DeliveryMetrics,
        policy: DeliveryPolicy = DeliveryPolicy(),
    ) -> None:
        self.store = store
        self.hooks = hooks
        self.keys = keys
        self.metrics = metrics
        self.policy = policy
        self._rng = random.Random()
        self._stopping = asyncio.Event()
        self.attempts = 0

    async def run(self) -> None:
        if not self.hooks:
            await self._stopping.wait()
            return
        timeout = aiohttp.ClientTimeout(total=self.policy.timeout_seconds)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(*(self._endpoint(session, h) for h in self.hooks))

    async def stop(self) -> None:
        self._stopping.set()

    async def _endpoint(self, session: aiohttp.ClientSession, hook: Webhook) -> None:
        while not self._stopping.is_set():
            try:
                worked = await self._round(session, hook)
            except Exception:  # the store is away: this endpoint waits, the others go on
                log.exception("webhook %s: delivery round failed", hook.id)
                worked = False
            if not worked:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.policy.poll_seconds)

    async def _round(self, session: aiohttp.ClientSession, hook: Webhook) -> bool:
        store = self.store
        now = datetime.now(UTC)
        oldest = await asyncio.to_thread(store.oldest_undelivered)
        since = oldest.get(hook.id)
        self.metrics.oldest_undelivered(hook.id, (now - since).total_seconds() if since else 0)
        if await asyncio.to_thread(store.endpoint_disabled, hook.id):
            return False
        due = await asyncio.to_thread(store.due_deliveries, hook.id, now, 50)
        for n, attempts, created in due:
            if self._stopping.is_set():
                break
            if not await self._attempt(session, hook, n, attempts, created):
                break  # disabled
        return bool(due)

    async def _attempt(
        self,
        session: aiohttp.ClientSession,
        hook: Webhook,
        n: Notification,
        attempts: int,
        created: datetime,
    ) -> bool:
        """One POST; False when the endpoint is now disabled."""
        now = datetime.now(UTC)
        lease = now + timedelta(seconds=self.policy.timeout_seconds + 5)
        if not await asyncio.to_thread(self.store.claim_delivery, n.id, hook.id, now, lease):
            return True  # another worker has it
        body = dumps(notification_event(n))
        stamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": n.id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(self.keys[hook.id], n.id, stamp, body),
        }
        started = time.monotonic()
        status: int | None = None
        error = ""
        try:
            async with session.post(hook.url, data=body, headers=headers) as resp:
                status = resp.status
                await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            error = f"{type(e).__name__}: {e}"
        self.attempts += 1
        elapsed = time.monotonic() - started
        now = datetime.now(UTC)
        store = self.store
        if status is not None and 200 <= status < 300:
            self.metrics.delivered(hook.id, elapsed)
            await asyncio.to_thread(
                store.record_attempt, n.id, hook.id, "delivered", status, "", now, now
            )
            return True
        self.metrics.failed(hook.id, elapsed)
        if status == 410:
            await asyncio.to_thread(
                store.record_attempt, n.id, hook.id, "failed", status, "410 Gone", now, now
            )
            await asyncio.to_thread(store.set_endpoint_disabled, hook.id, now, "answered 410 Gone")
            log.warning("webhook %s answered 410: disabled", hook.id)
            return False
        error = error or f"HTTP {status}"
        delay = backoff(self.policy, attempts + 1, self._rng)
        next_at = now + timedelta(seconds=delay)
        gave_up = (next_at - created).total_seconds() > self.policy.give_up_seconds
        state = "failed" if gave_up else "pending"
        await asyncio.to_thread(
            store.record_attempt, n.id, hook.id, state, status, error, next_at, now
        )
        return True

"""The delivery loop against a real local HTTP server and a real SQLite store: signatures
as the Standard Webhooks library makes them, backoff bounds, giving up, resending,
and a dead endpoint that does not hold up a live one."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web
from e2e_support import free_port
from prometheus_client import CollectorRegistry
from standardwebhooks import Webhook as Verifier
from test_notify import RULES, SECRET, _history

from sada.consumers.store import SqlStore
from sada.consumers.webhooks import Deliverer, DeliveryPolicy, backoff, sign
from sada.infra.webhook_metrics import WebhookMetrics
from sada.pipeline.domain.projector import Projector
from sada.pipeline.domain.webhooks import Webhook, secret_key


def test_signature_is_the_standard_webhooks_one() -> None:
    stamp = datetime(2026, 5, 5, 9, 0, tzinfo=UTC)
    ours = sign(secret_key(SECRET, "s"), "msg_1", int(stamp.timestamp()), b'{"a":1}')
    assert ours == Verifier(SECRET).sign("msg_1", stamp, '{"a":1}')


def test_backoff_doubles_with_jitter_up_to_an_hour() -> None:
    policy = DeliveryPolicy(backoff_seconds=2.0)
    rng = random.Random(7)
    for attempts, low, high in ((1, 1, 2), (2, 2, 4), (3, 4, 8), (40, 1800, 3600)):
        delays = [backoff(policy, attempts, rng) for _ in range(50)]
        assert all(low <= d <= high for d in delays), attempts
        assert len(set(delays)) > 1  # jittered


def _store(tmp_path: Path) -> SqlStore:
    store = SqlStore(f"sqlite:///{tmp_path / 'sada.db'}")
    store.migrate()
    Projector(RULES, store, 0).apply_batch(list(enumerate(_history())))
    todo = store.unpublished_notifications()
    store.mark_notifications_published(
        [n.id for n in todo], {n.id: ["dead", "live"] for n in todo[:3]}
    )
    return store


def test_a_dead_endpoint_gives_up_and_never_holds_up_a_live_one(tmp_path: Path) -> None:
    store = _store(tmp_path)
    hits: dict[str, list[str]] = {"dead": [], "live": []}

    async def handle(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        hits[name].append(request.headers["webhook-id"])
        if name == "dead":
            await asyncio.sleep(0.5)  # slow, then failing: each attempt costs its timeout
            return web.Response(status=503)
        return web.Response(status=200)

    async def scenario() -> None:
        app = web.Application()
        app.router.add_post("/{name}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        hooks = tuple(
            Webhook(n, f"http://127.0.0.1:{port}/{n}", None, SECRET, ("x",)) for n in hits
        )
        metrics = WebhookMetrics(CollectorRegistry())
        metrics.set_endpoints(hits)
        policy = DeliveryPolicy(
            backoff_seconds=0.05, give_up_seconds=1.0, timeout_seconds=0.2, poll_seconds=0.05
        )
        key = secret_key(SECRET, "s")
        deliverer = Deliverer(store, hooks, {"dead": key, "live": key}, metrics, policy)
        task = asyncio.create_task(deliverer.run())
        started = time.monotonic()
        deadline = started + 30
        live_done = None
        while time.monotonic() < deadline:
            states = {(r["endpoint"], r["state"]) for r in store.deliveries_list()}
            if (
                live_done is None
                and states >= {("live", "delivered")}
                and (
                    "live",
                    "pending",
                )
                not in states
            ):
                live_done = time.monotonic() - started
            if live_done is not None and ("dead", "pending") not in states:
                break
            await asyncio.sleep(0.05)
        await deliverer.stop()
        await asyncio.wait_for(task, 10)
        await runner.cleanup()
        assert live_done is not None and live_done < 2.0  # not behind the dead one's attempts

    asyncio.run(scenario())
    rows = store.deliveries_list()
    assert {r["state"] for r in rows if r["endpoint"] == "live"} == {"delivered"}
    dead = [r for r in rows if r["endpoint"] == "dead"]
    assert len(dead) == 3 and {r["state"] for r in dead} == {"failed"}
    assert all(r["attempts"] >= 1 for r in dead)
    assert len(hits["live"]) == 3 == len(set(hits["live"]))
    # Kept, and resendable.
    assert store.retry_deliveries("dead", datetime.now(UTC)) == 3
    assert {r["state"] for r in store.deliveries_list() if r["endpoint"] == "dead"} == {"pending"}
    store.close()

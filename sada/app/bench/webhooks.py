"""The end-to-end figure with webhook endpoints configured, beside the one without.

Three HTTP receivers on 127.0.0.1, started here, answer every POST with 204.
The workload of the smallest size runs end-to-end once more, with three
``[[webhooks]]`` (every notification type, every kind of recipient) pointing
at them and a :class:`~sada.consumers.webhooks.Deliverer` running beside the
pipeline, as ``sada run`` runs one. The clock is the end-to-end one (until
the projector has applied every record): delivery runs apart from the
pipeline and must not slow it. What was delivered by then, and after a
drain, is kept in the details.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sada.app.bench import load
from sada.app.bench.load import GENERATED, GO, PROGRESS, PUBLISHED, RAW
from sada.app.bench.probe import pipeline_worker, until_applied
from sada.app.progress import Progress
from sada.infra.child import READY, Child
from sada.pipeline.domain.notify import NOTIFICATION_TYPES
from sada.pipeline.domain.webhooks import Webhook, secret_key

if TYPE_CHECKING:
    from sada.app.bench.measure import Bench

ENDPOINTS = 3
DRAIN_SECONDS = 60.0  # how long the deliveries may take to catch up after the run
_SECRET = "whsec_" + base64.b64encode(b"sada-bench-webhook-key-0123456").decode()


class Receivers:
    """HTTP servers on free local ports that count the POSTs they answer with 204."""

    def __init__(self, count: int = ENDPOINTS) -> None:
        self.count = count
        self.received = 0
        self._runners: list[web.AppRunner] = []
        self.urls: list[str] = []

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.received += 1
        return web.Response(status=204)

    async def __aenter__(self) -> Receivers:
        for _ in range(self.count):
            app = web.Application()
            app.router.add_post("/", self._handle)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self._runners.append(runner)
            port = runner.addresses[0][1]
            self.urls.append(f"http://127.0.0.1:{port}/")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for runner in self._runners:
            await runner.cleanup()


class _Uncounted:
    """Delivery metrics nobody reads: the bench counts at the receivers."""

    def delivered(self, endpoint: str, seconds: float) -> None:
        pass

    def failed(self, endpoint: str, seconds: float) -> None:
        pass

    def oldest_undelivered(self, endpoint: str, seconds: float) -> None:
        pass


def hooks_for(urls: list[str]) -> tuple[Webhook, ...]:
    return tuple(
        Webhook(f"bench-{i}", url, None, _SECRET, NOTIFICATION_TYPES)
        for i, url in enumerate(urls, 1)
    )


def with_webhooks(bench: Bench, n: int) -> None:
    """Measure the workload of ``n`` events end-to-end with the endpoints; add its figures."""
    tag = f"[{n:,}, {ENDPOINTS} webhooks]"
    with load.start(bench._job("workload", events=n)) as child:
        child.expect_blocking(GENERATED, handlers={PROGRESS: lambda _count: None})
        child.expect_blocking(RAW)
        detail = asyncio.run(_end_to_end(bench, child, n, tag))
    bench.report.details["webhooks"] = detail
    rate = n / detail["seconds"]
    bench.report.add(
        "e2e_throughput_webhooks",
        f"end-to-end throughput, {ENDPOINTS} webhook endpoints",
        rate,
        "events/s",
        n,
    )
    none = next(f.value for f in bench.report.figures if f.id == "e2e_throughput" and f.events == n)
    bench.report.add(
        "e2e_webhooks_vs_none",
        f"end-to-end with {ENDPOINTS} webhook endpoints ÷ without",
        rate / none,
        "ratio",
        n,
    )


async def _end_to_end(bench: Bench, child: Child, n: int, tag: str) -> dict[str, Any]:
    from sada.consumers.webhooks import Deliverer, DeliveryPolicy

    await asyncio.to_thread(bench.infra.reset_topics)
    store = bench.scratch.new(f"webhooks-{n}")
    try:
        async with Receivers() as receivers:
            hooks = hooks_for(receivers.urls)
            config = dataclasses.replace(bench.config, webhooks=hooks)
            keys = {h.id: secret_key(_SECRET, h.id) for h in hooks}
            worker = pipeline_worker(
                bench._fresh_group(), config, store, bench.infra, bench.scratch.url_for(store)
            )
            deliverer = Deliverer(store, hooks, keys, _Uncounted(), DeliveryPolicy())
            await worker.start()
            delivering = asyncio.create_task(deliverer.run())
            try:
                await worker.joined()
                await child.expect(READY)
                progress = Progress(bench.out, f"{tag} end-to-end (events applied)", n)
                started = time.perf_counter()
                child.send(GO)
                _, finished = await until_applied(worker, n, progress, started)
                progress.done()
                at_end = receivers.received
                await child.expect(PUBLISHED)
                drained = await _drain(store, receivers)
            finally:
                await deliverer.stop()
                await worker.stop()
                await delivering
        seconds = finished - started
        detail = {
            "seconds": seconds,
            "endpoints": ENDPOINTS,
            "delivered_in_run": at_end,
            "delivered": receivers.received,
            "drained": drained,
        }
        print(
            f"{tag} end-to-end {n / seconds:,.0f} events/s; {at_end:,} webhooks delivered "
            f"by then, {receivers.received:,} in all",
            file=bench.out,
            flush=True,
        )
        return detail
    finally:
        bench.scratch.drop(store)


async def _drain(store: Any, receivers: Receivers) -> bool:
    """Wait (with a deadline) until every delivery the store holds was answered."""
    deadline = time.monotonic() + DRAIN_SECONDS
    while time.monotonic() < deadline:
        pending = await asyncio.to_thread(store.deliveries_list, ["pending"])
        unpublished = await asyncio.to_thread(store.unpublished_notifications, 1)
        if not pending and not unpublished:
            return True
        await asyncio.sleep(0.05)
    return False

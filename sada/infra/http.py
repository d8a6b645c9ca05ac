"""The HTTP API of a running Sada (default 127.0.0.1:6066).

``GET /healthz`` (JSON: broker, topics, worker state), ``GET /metrics``
(Prometheus text format), ``GET /api/v1/submissions/{tracking_code}``,
``GET /api/v1/events/{id}?source=…`` (what became of one published event:
accepted, late or rejected with the reason; ``pending`` while undecided).
Further routes (event ingestion, dashboard) register through ``extra_routes``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sada.pipeline.domain.tracking import parse_tracking_code

RouteInstaller = Callable[[web.Application], None]


def build_app(
    worker: Any, store: Any, registry: Any, extra_routes: Iterable[RouteInstaller] = ()
) -> web.Application:
    app = web.Application(client_max_size=8 * 1024 * 1024)

    async def healthz(_request: web.Request) -> web.Response:
        body = await worker.health()
        return web.json_response(body, status=200 if body["status"] == "ok" else 503)

    async def metrics(_request: web.Request) -> web.Response:
        data = await asyncio.to_thread(generate_latest, registry)
        return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def submission(request: web.Request) -> web.Response:
        raw = request.match_info["code"]
        code = parse_tracking_code(raw)
        if code is None:
            return _error(
                400,
                "malformed_tracking_code",
                f"{raw!r} is not a tracking code: 8-12 digits (Latin, Persian or Arabic-Indic) "
                "with a valid check digit",
            )
        found = await asyncio.to_thread(store.submission_by_code, code)
        if found is None:
            return _error(404, "not_found", f"no submission has tracking code {code}")
        return web.json_response(found)

    async def event(request: web.Request) -> web.Response:
        source = request.query.get("source")
        if not source:
            return _error(400, "missing_source", "name the event's source: ?source=<source>")
        event_id = request.match_info["id"]
        found = await asyncio.to_thread(store.event_outcome, source, event_id)
        if found is None:
            # Published events are decided within seconds; until then, or if it never
            # reached Kafka, nothing is known: the answer says which it may be.
            return web.json_response(
                {
                    "source": source,
                    "id": event_id,
                    "status": "pending",
                    "detail": "not decided: still on its way (or waiting for its submission), "
                    "or never published",
                },
                status=404,
            )
        return web.json_response(found)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1/events/{id}", event)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/submissions/{code}", submission)
    for install in extra_routes:
        install(app)
    return app


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)

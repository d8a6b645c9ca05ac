"""The work queue's HTTP route: ``GET /api/v1/submissions``, as JSON or as CSV.

JSON by default; CSV with ``format=csv`` or ``Accept: text/csv`` (UTF-8 with
a BOM, so spreadsheet tools read Persian). A bad parameter answers 400 with
``{"error": "bad_parameter", "parameter": name, "message": ...}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from sada.consumers.store import SqlStore
from sada.consumers.workqueue import WorkQueueService
from sada.pipeline.domain.config import Config
from sada.pipeline.domain.errors import QueryError

PATH = "/api/v1/submissions"


def wants_csv(request: web.Request) -> bool:
    fmt = request.query.get("format")
    if fmt is not None:
        return fmt == "csv"
    accept = request.headers.get("Accept", "")
    return "text/csv" in accept and "application/json" not in accept


class QueueView:
    """The route over one work-queue service."""

    def __init__(self, service: WorkQueueService) -> None:
        self.service = service

    async def submissions(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        try:
            if wants_csv(request):
                text = await asyncio.to_thread(self.service.csv, params)
                return web.Response(
                    body=text.encode("utf-8"),
                    headers={
                        "Content-Type": "text/csv; charset=utf-8",
                        "Content-Disposition": 'attachment; filename="sada-work-queue.csv"',
                        "Cache-Control": "no-store",
                    },
                )
            page = await asyncio.to_thread(self.service.page, params)
        except QueryError as e:
            return web.json_response(
                {"error": "bad_parameter", "parameter": e.parameter, "message": str(e)},
                status=400,
            )
        return web.json_response(page, headers={"Cache-Control": "no-store"})


def install_queue(app: web.Application, service: WorkQueueService) -> None:
    app.router.add_get(PATH, QueueView(service).submissions)


def queue_routes(
    store: SqlStore, config: Config, **options: Any
) -> Callable[[web.Application], None]:
    """The installer of the work-queue route for ``sada run`` (``options``: the service's)."""
    service = WorkQueueService(store, config, **options)

    def install(app: web.Application) -> None:
        install_queue(app, service)

    return install

"""The dashboard's HTTP routes: the page, its content, its JSON, and its stylesheet and script.

- ``GET /dashboard``: the page (``?lang=en`` for English); ``?part=content``
  gives only what refreshes, which the page's script fetches every few
  seconds and swaps in (without JavaScript the page is still complete);
- ``GET /dashboard/queue``: the work queue, filterable (the parameters of
  ``GET /api/v1/submissions``); ``GET /dashboard/submission?code=``: one
  submission's page (timeline, deadlines, escalations, responses);
- ``GET /api/v1/dashboard``: the same data as JSON;
- ``GET /dashboard/static/{name}``: the files of the package's ``static/``;
- ``GET /``: a redirect to the dashboard.

Nothing outside this server is loaded (operators' networks may have no
internet), and the Content-Security-Policy says so.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from sada.consumers.dashboard.pages import queue_page, submission_page
from sada.consumers.dashboard.render import (
    render_content,
    render_page,
    render_queue,
    render_submission,
)
from sada.consumers.dashboard.view import Dashboard
from sada.consumers.dashboard.words import DEFAULT_LANG, LANGS
from sada.consumers.store import SqlStore
from sada.consumers.workqueue import WorkQueueService
from sada.pipeline.domain.config import Config
from sada.pipeline.domain.errors import QueryError

PAGE = "/dashboard"
API = "/api/v1/dashboard"
STATIC = "/dashboard/static/"

_CONTENT_TYPES = {".css": "text/css", ".js": "text/javascript"}
_NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
# Only this server, and only what the page needs: it works with no internet.
_POLICY = (
    "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "img-src data:; base-uri 'none'; form-action 'self'"
)


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    content_type: str
    version: str  # of its content: part of its URL


def _assets() -> dict[str, _Asset]:
    """The files of ``static/``, read once from the package data."""
    found: dict[str, _Asset] = {}
    for entry in files(__name__.rpartition(".")[0]).joinpath("static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _CONTENT_TYPES:
            body = entry.read_bytes()
            version = hashlib.sha256(body).hexdigest()[:16]
            found[entry.name] = _Asset(body, _CONTENT_TYPES[suffix], version)
    return found


class DashboardView:
    """The dashboard's routes over one metrics registry, store and configuration."""

    def __init__(
        self, registry: CollectorRegistry, store: SqlStore, config: Config, **options: Any
    ) -> None:
        self.dashboard = Dashboard(registry, store, config, **options)
        self.store = store
        self.queue = WorkQueueService(store, config)
        self.assets = _assets()

    def static_url(self, name: str) -> str:
        """The URL of a static file, relative to the page (so a path prefix in front still works).

        It names the file's version, so a browser may keep the file for good
        and still never uses a stale one after an upgrade.
        """
        return f"{STATIC.lstrip('/')}{name}?v={self.assets[name].version}"

    async def page(self, request: web.Request) -> web.Response:
        lang = _lang(request)
        data = await asyncio.to_thread(self.dashboard.data)
        if request.query.get("part") == "content":
            return _html(render_content(data, lang))
        headers = {"Content-Security-Policy": _POLICY}
        return _html(render_page(data, lang, self.static_url, dict(request.query)), headers)

    async def queue_page(self, request: web.Request) -> web.Response:
        lang = _lang(request)
        params = dict(request.query)
        try:
            data = await asyncio.to_thread(queue_page, self.queue, params)
        except QueryError as e:
            raise web.HTTPBadRequest(text=str(e)) from e
        body = render_queue(data, lang, self.static_url, params)
        return _html(body, {"Content-Security-Policy": _POLICY})

    async def submission_page(self, request: web.Request) -> web.Response:
        lang = _lang(request)
        code = request.query.get("code", "")
        data = await asyncio.to_thread(submission_page, self.store, self.queue, code)
        body = render_submission(data, lang, self.static_url, dict(request.query))
        return _html(body, {"Content-Security-Policy": _POLICY}, 200 if data else 404)

    async def api(self, _request: web.Request) -> web.Response:
        data = await asyncio.to_thread(self.dashboard.data)
        return web.json_response(data, headers={"Cache-Control": "no-store"})

    async def static(self, request: web.Request) -> web.Response:
        asset = self.assets.get(request.match_info["name"])
        if asset is None:
            raise web.HTTPNotFound()
        return web.Response(
            body=asset.body,
            content_type=asset.content_type,
            charset="utf-8",
            headers={
                "Cache-Control": "public, max-age=31536000, immutable",
                "X-Content-Type-Options": "nosniff",
            },
        )


def _lang(request: web.Request) -> str:
    lang = request.query.get("lang", DEFAULT_LANG)
    return lang if lang in LANGS else DEFAULT_LANG


def _html(body: str, headers: dict[str, str] | None = None, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        text=body,
        content_type="text/html",
        charset="utf-8",
        headers={**_NO_STORE, **(headers or {})},
    )


async def _to_dashboard(request: web.Request) -> web.Response:
    """``/`` leads to the dashboard, keeping the query (``?lang=en``)."""
    raise web.HTTPFound(PAGE + (f"?{request.query_string}" if request.query_string else ""))


def routes(worker: Any) -> Callable[[web.Application], None]:
    """The installer of the dashboard's routes for ``sada run``.

    ``worker`` is the running :class:`~sada.pipeline.worker.Worker`: its
    metrics registry, store and configuration are read.
    """
    view = DashboardView(worker.metrics.registry, worker.store, worker.config)

    def install(app: web.Application) -> None:
        app.router.add_get(PAGE, view.page)
        app.router.add_get("/", _to_dashboard)
        app.router.add_get(PAGE + "/queue", view.queue_page)
        app.router.add_get(PAGE + "/submission", view.submission_page)
        app.router.add_get(API, view.api)
        app.router.add_get(STATIC + "{name}", view.static)

    return install

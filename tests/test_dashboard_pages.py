"""The dashboard's work queue, submission page and charts, in headless Chromium, both languages.

The store holds :mod:`queue_support`'s known submissions; the HTTP
application is Sada's own (:func:`sada.infra.http.build_app` with the
dashboard's and the work queue's routes). Screenshots go to
``test-artifacts/`` for CI to keep.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
import queue_support
from aiohttp import web
from prometheus_client import CollectorRegistry
from queue_support import ESCALATIONS, OpenStore, populate, tracking_code

from sada.consumers.dashboard.routes import DashboardView, routes
from sada.consumers.queue_routes import install_queue
from sada.consumers.snapshot import SnapshotSource
from sada.consumers.store import SqlStore
from sada.consumers.workqueue import WorkQueueService
from sada.infra.http import build_app
from sada.infra.metrics import Metrics
from sada.pipeline.domain.config import Config
from sada.pipeline.domain.rules import Rules

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
PERSIAN = str.maketrans("۰۱۲۳۴۵۶۷۸۹", "0123456789")

open_store = queue_support.open_store
config = queue_support.config


def _code(name: str) -> str:
    order = sorted(queue_support.SPECS, key=lambda s: s.created)
    return tracking_code(next(i for i, s in enumerate(order) if s.name == name))


@contextmanager
def serve(store: SqlStore, cfg: Config) -> Iterator[str]:
    """The dashboard and the work queue over ``store``, on a free port: yields the base URL."""
    registry = CollectorRegistry()
    metrics = Metrics(registry, cfg.units.keys())
    metrics.set_snapshot_source(SnapshotSource(store, Rules.from_config(cfg), lambda: None))
    worker = SimpleNamespace(metrics=metrics, store=store, config=cfg)

    def install(app: web.Application) -> None:
        install_queue(app, WorkQueueService(store, cfg, sync_seconds=0))

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    app = build_app(None, store, registry, [routes(worker), install])
    runner = web.AppRunner(app, access_log=None)

    async def start() -> int:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return int(runner.addresses[0][1])

    try:
        port = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("chromium not found: apt-get install -y chromium", pytrace=False)


def browse(tmp: Path, url: str, *args: str) -> str:
    profile = tmp / f"chromium-{uuid.uuid4().hex[:8]}"
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=3000",
        *args,
        url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"chromium failed:\n{result.stderr[-3000:]}"
    return result.stdout


def screenshot(tmp: Path, url: str, name: str, height: int = 1100) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    shot.unlink(missing_ok=True)
    browse(tmp, url, f"--screenshot={shot}", f"--window-size=1400,{height}")
    assert shot.stat().st_size > 10_000, f"{name} is empty"


def test_queue_shows_overdue_submissions_first_and_links_their_pages(
    open_store: OpenStore, config: Config, tmp_path: Path
) -> None:
    store = open_store("sqlite")
    populate(store, config)
    with serve(store, config) as url:
        dom = browse(tmp_path, f"{url}/dashboard/queue?sla=overdue", "--dump-dom")
        codes = re.findall(r'data-code="(\d+)"', dom)
        assert codes == [_code("root"), _code("anatomy"), _code("monitoring")]
        # Persian digits on the page, the code itself in the link.
        assert _code("anatomy").translate(str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")) in dom
        assert f"submission?code={_code('anatomy')}&amp;lang=fa" in dom
        assert "گذشته از مهلت" in dom and 'dir="rtl"' in dom
        assert "۱۱٫۰" in dom  # anatomy: 11 business hours overdue
        screenshot(tmp_path, f"{url}/dashboard/queue", "queue-fa.png")
        screenshot(tmp_path, f"{url}/dashboard/queue?lang=en", "queue-en.png")

        en = browse(tmp_path, f"{url}/dashboard/queue?lang=en&unit=univ.food", "--dump-dom")
        assert re.findall(r'data-code="(\d+)"', en) == [
            _code("food-risk"),
            _code("food-ok"),
            _code("closed"),
        ]
        assert "At risk" in en and 'dir="ltr"' in en

        page = browse(tmp_path, f"{url}/dashboard/submission?code={_code('root')}", "--dump-dom")
        assert "Library card renewal" in page
        assert page.count('class="escalated"') == 2
        assert "گذشتن مهلت پاسخ اولیه" in page
        # Typed with Persian digits in the tracking-code box: the same page.
        persian_code = _code("root").translate(str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹"))
        again = browse(tmp_path, f"{url}/dashboard/submission?code={persian_code}", "--dump-dom")
        assert "Library card renewal" in again
        screenshot(
            tmp_path, f"{url}/dashboard/submission?code={_code('root')}", "submission-fa.png"
        )
        screenshot(
            tmp_path,
            f"{url}/dashboard/submission?code={_code('root')}&lang=en",
            "submission-en.png",
        )
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{url}/dashboard/submission?code=12345678", timeout=30)
        assert missing.value.code == 404


def test_charts_are_drawn_from_the_store_in_both_directions(
    open_store: OpenStore, config: Config, tmp_path: Path
) -> None:
    store = open_store("sqlite")
    populate(store, config)
    with serve(store, config) as url:
        fa = browse(tmp_path, f"{url}/dashboard", "--dump-dom")
        en = browse(tmp_path, f"{url}/dashboard?lang=en", "--dump-dom")
        # Each unit leads to its queue; a unit holding overdue ones, to those.
        assert 'href="dashboard/queue?unit=univ.food&amp;lang=en"' in en
        assert 'href="dashboard/queue?unit=univ&amp;sla=overdue&amp;lang=fa"' in fa
        for dom in (fa, en):
            for chart in ("daily", "compliance", "backlog"):
                assert f'<figure class="chart" data-chart="{chart}">' in dom
        values_en = _series(en, "daily", "intake")
        values_fa = _series(fa, "daily", "intake")
        assert values_en[13][1] == 2 and values_en[11][1] == 2  # Jan 6, Jan 4
        assert [v for _x, v in values_en] == [v for _x, v in values_fa]
        # English runs left to right, Persian right to left: the same bars, mirrored.
        xs_en = [x for x, _v in values_en]
        xs_fa = [x for x, _v in values_fa]
        assert xs_en == sorted(xs_en) and xs_fa == sorted(xs_fa, reverse=True)
        escalated = _series(en, "daily", "escalated")
        assert sum(v for _x, v in escalated) == 1  # the hospital's, on Jan 6
        backlog = _series(en, "backlog", "open")
        assert sum(v for _x, v in backlog) == 7
        screenshot(tmp_path, f"{url}/dashboard", "charts-fa.png", height=2400)
        screenshot(tmp_path, f"{url}/dashboard?lang=en", "charts-en.png", height=2400)


def _series(dom: str, chart: str, key: str) -> list[tuple[float, float]]:
    found = re.findall(
        rf'<rect x="([\d.]+)"[^>]*data-chart="{chart}" '
        rf'data-key="{key}:(\d+)" data-value="([\d.]+)"',
        dom,
    )
    by_index = sorted((int(i), float(x), float(v)) for x, i, v in found)
    return [(x, v) for _i, x, v in by_index]


def test_totals_come_from_the_store_and_survive_a_restart(
    open_store: OpenStore, config: Config
) -> None:
    store = open_store("sqlite")
    populate(store, config)

    def overview(s: SqlStore) -> dict[str, object]:
        registry = CollectorRegistry()
        Metrics(registry, config.units.keys())  # counters at zero: a process just started
        data = DashboardView(registry, s, config, ttl=0).dashboard.data()
        return {
            "overview": data["overview"],
            "escalations": data["escalations"],
            "kinds": data["kinds"],
            "charts": data["trends"],
        }

    before = overview(store)
    assert before["overview"]["escalations"] == len(ESCALATIONS)  # type: ignore[index]
    assert before["overview"]["accepted"] == len(queue_support.SPECS)  # type: ignore[index]
    assert before["escalations"]["reason"]["first_response_overdue"] == 2  # type: ignore[index]
    complaints = next(k for k in before["kinds"] if k["kind"] == "complaint")  # type: ignore[attr-defined]
    assert complaints["resolution_mean_hours"] == 0.0  # closed the hour it was created
    assert sum(before["charts"]["intake"]) == 8  # type: ignore[index]
    store.close()
    restarted = open_store("sqlite")  # the same database, a new process
    assert overview(restarted) == before


def test_root_leads_to_the_dashboard(open_store: OpenStore, config: Config) -> None:
    store = open_store("sqlite")
    with serve(store, config) as url, urllib.request.urlopen(f"{url}/?lang=en", timeout=30) as got:
        assert got.url == f"{url}/dashboard?lang=en"
        assert "Sada — operations dashboard" in got.read().decode("utf-8")

"""The work queue on both backends: filters, order, pages, search, CSV and bad parameters.

The store holds :mod:`queue_support`'s known submissions; each test asks the
service (or the HTTP route) what a user would and checks the answer against
what those contents must give.
"""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any

import pytest
import queue_support
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from queue_support import BACKENDS, CLOCK, EXPECTED_SLA, SPECS, ZWNJ, OpenStore, populate, sid

from sada.consumers.queue_routes import install_queue
from sada.consumers.store import SqlStore
from sada.consumers.store import queue as store_queue
from sada.consumers.workqueue import CSV_COLUMNS, WorkQueueService
from sada.pipeline.domain.config import Config
from sada.pipeline.domain.errors import QueryError
from sada.pipeline.domain.model import format_time

open_store = queue_support.open_store
config = queue_support.config


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def queue(open_store: OpenStore, backend: str, config: Config) -> WorkQueueService:
    store = open_store(backend)
    populate(store, config)
    return WorkQueueService(store, config, sync_seconds=0)


def names(page: dict[str, Any]) -> list[str]:
    return [i["submission_id"].removeprefix("sub-") for i in page["items"]]


def everything(queue: WorkQueueService, **params: str) -> list[dict[str, Any]]:
    items, cursor = [], None
    while True:
        page = queue.page({**params, **({"cursor": cursor} if cursor else {})})
        items.extend(page["items"])
        cursor = page["next"]
        if cursor is None:
            return items


def test_default_order_is_most_overdue_first_then_nearest_deadline(queue: WorkQueueService) -> None:
    page = queue.page({})
    assert page["next"] is None
    assert page["clock"] == format_time(CLOCK)
    # Overdue longest first (root since December, anatomy since Monday 09:00, the
    # question since Monday 16:00), then the nearest deadline; no deadline last.
    assert names(page)[:4] == ["root", "anatomy", "monitoring", "food-risk"]
    assert set(names(page)[-2:]) == {"closed", "withdrawn"}
    items = {i["submission_id"].removeprefix("sub-"): i for i in page["items"]}
    assert {n: i["sla"] for n, i in items.items()} == EXPECTED_SLA
    # Monday 09:00 to Tuesday 12:00 is 7 + 4 business hours.
    assert items["anatomy"]["business_hours_overdue"] == 11.0
    assert items["anatomy"]["business_hours_left"] is None
    assert items["food-risk"]["business_hours_left"] == 0.0
    assert items["food-ok"]["business_hours_left"] > 0
    lefts = [
        i["business_hours_left"] for i in page["items"] if i["business_hours_left"] is not None
    ]
    assert lefts == sorted(lefts)
    a = items["anatomy"]
    assert a["title"] == "كتابخانه دانشکده تعطيل است"  # stored as sent
    assert (a["kind"], a["unit_id"], a["level"], a["support"], a["oppose"]) == (
        "complaint",
        "univ.fac-medicine.anatomy",
        0,
        12,
        2,
    )
    assert a["deadlines"]["first_response"] == "2026-01-05T05:30:00.000000Z"  # Mon 09:00 Tehran
    assert a["tracking_code"].isdigit()


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"sla": "overdue"}, ["root", "anatomy", "monitoring"]),
        ({"sla": "at_risk"}, ["food-risk"]),
        ({"sla": "ok"}, ["food-ok", "dorm", "hospital"]),
        ({"unit": "univ.food"}, ["food-risk", "food-ok", "closed"]),
        ({"unit": "univ.food", "status": "open"}, ["food-risk", "food-ok"]),
        ({"unit": "univ.vc-education", "subtree": "true"}, ["anatomy", "withdrawn"]),
        ({"unit": "univ.vc-education"}, []),
        ({"unit": "univ", "subtree": "true", "sla": "overdue"}, ["root", "anatomy", "monitoring"]),
        ({"unit": "univ", "sla": "overdue"}, ["root"]),
        ({"kind": "complaint", "status": "open"}, ["root", "anatomy", "food-risk", "dorm"]),
        ({"kind": "question,criticism"}, ["monitoring", "food-ok", "withdrawn"]),
        ({"channel": "telegram"}, ["monitoring", "food-risk"]),
        ({"level": "2"}, ["root"]),
        ({"level": "۱"}, ["hospital"]),
        ({"status": "withdrawn"}, ["withdrawn"]),
        ({"created_from": "2026-01-06"}, ["dorm", "hospital"]),
        ({"created_from": "1404-10-16"}, ["dorm", "hospital"]),  # Jalali for 2026-01-06
        ({"created_from": "۱۴۰۴-۱۰-۱۶"}, ["dorm", "hospital"]),
        ({"created_to": "2026-01-03"}, ["root", "anatomy", "closed", "withdrawn"]),
        ({"created_from": "2026-01-04", "created_to": "1404-10-14"}, ["monitoring", "food-risk"]),
        ({"created_from": "2026-01-06T08:30:00+03:30"}, ["dorm"]),
        ({"q": "كتابخانه"}, ["anatomy", "monitoring", "hospital"]),
        ({"q": "library"}, ["root"]),
        ({"q": "LIBRARY renewal"}, ["root"]),
        ({"q": "کتابخانه", "sla": "overdue", "unit": "univ.monitoring"}, ["monitoring"]),
        ({"q": "موجود نیست"}, []),
    ],
)
def test_filters(queue: WorkQueueService, params: dict[str, str], expected: list[str]) -> None:
    assert sorted(names(queue.page(params))) == sorted(expected)
    # ...and each filtered list is in the default order.
    everything_in_order = [n for n in names(queue.page({})) if n in expected]
    assert names(queue.page(params)) == everything_in_order


@pytest.mark.parametrize("cap", [2000, 1], ids=["from-index", "walking-the-order"])
@pytest.mark.parametrize("typed", ["کتابخانه", "كتابخانه", f"کتاب{ZWNJ}خانه", "کتابخانه"])
def test_search_finds_every_spelling(
    queue: WorkQueueService, typed: str, cap: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both plans of a search (ids from the index, or testing keys in urgency order).
    monkeypatch.setattr(store_queue, "SEARCH_CAP", cap)
    # Arabic kaf, Persian kaf, with and without the zero-width non-joiner: one word.
    assert sorted(names(queue.page({"q": typed}))) == ["anatomy", "hospital", "monitoring"]
    titles = {i["title"] for i in queue.page({"q": typed})["items"]}
    assert f"ساعات کتاب{ZWNJ}خانه مرکزی" in titles  # the stored text keeps its ZWNJ


@pytest.mark.parametrize("limit", ["1", "2", "4"])
def test_pages_follow_the_cursor_without_gaps_or_repeats(
    queue: WorkQueueService, limit: str
) -> None:
    whole = [i["submission_id"] for i in queue.page({"limit": "100"})["items"]]
    paged = [i["submission_id"] for i in everything(queue, limit=limit)]
    assert paged == whole
    assert len(whole) == len(SPECS)
    first = queue.page({"limit": limit})
    assert len(first["items"]) == int(limit)
    assert first["next"] is not None
    filtered = [i["submission_id"] for i in everything(queue, limit=limit, status="open")]
    assert filtered == [i["submission_id"] for i in queue.page({"status": "open"})["items"]]


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"status": "pending"}, "status"),
        ({"kind": "complaint,praise"}, "kind"),
        ({"sla": "late"}, "sla"),
        ({"level": "-1"}, "level"),
        ({"level": "two"}, "level"),
        ({"limit": "0"}, "limit"),
        ({"limit": "5000"}, "limit"),
        ({"created_from": "2026-13-01"}, "created_from"),
        ({"created_to": "yesterday"}, "created_to"),
        ({"created_from": "2026-01-06", "created_to": "2026-01-01"}, "created_to"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"unit": "univ.nowhere"}, "unit"),
        ({"subtree": "maybe", "unit": "univ"}, "subtree"),
        ({"subtree": "true"}, "subtree"),
        ({"channel": "Fax Machine"}, "channel"),
        ({"format": "xml"}, "format"),
        ({"sort": "created"}, "sort"),
    ],
)
def test_bad_parameters_are_named(
    queue: WorkQueueService, params: dict[str, str], parameter: str
) -> None:
    with pytest.raises(QueryError) as raised:
        queue.page(params)
    assert raised.value.parameter == parameter


def test_csv_has_the_documented_columns_and_opens_as_utf8(queue: WorkQueueService) -> None:
    raw = queue.csv({"limit": "1"}).encode("utf-8")
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert len(rows) == 1
    rows = list(csv.DictReader(io.StringIO(queue.csv({}).removeprefix("\ufeff"))))
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert [r["submission_id"] for r in rows] == [
        i["submission_id"] for i in queue.page({"limit": "100"})["items"]
    ]
    anatomy = next(r for r in rows if r["submission_id"] == sid("anatomy"))
    assert anatomy["title"] == "كتابخانه دانشکده تعطيل است"
    assert anatomy["first_response_due"] == "2026-01-05T05:30:00.000000Z"
    assert anatomy["first_response_due_jalali"] == "1404/10/15 09:00"
    assert anatomy["created_at_jalali"] == "1404/10/13 09:00"
    assert anatomy["sla"] == "overdue"
    assert anatomy["business_hours_overdue"] == "11.0"


def test_texts_are_indexed_from_the_archive_once(
    open_store: OpenStore, backend: str, config: Config
) -> None:
    store = open_store(backend)
    populate(store, config)
    assert store.sync_texts() == len(SPECS)
    assert store.sync_texts() == 0
    again = open_store(backend)  # another process: the watermark is in the database
    assert again.sync_texts() == 0


async def _client(store: SqlStore, config: Config) -> TestClient[Any, Any]:
    app = web.Application()
    install_queue(app, WorkQueueService(store, config, sync_seconds=0))
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    return client


def test_http_route_answers_json_csv_and_400(open_store: OpenStore, config: Config) -> None:
    store = open_store("sqlite")
    populate(store, config)
    asyncio.run(_http_checks(store, config))


async def _http_checks(store: SqlStore, config: Config) -> None:
    client = await _client(store, config)
    try:
        r = await client.get("/api/v1/submissions", params={"sla": "overdue", "limit": "2"})
        assert r.status == 200
        body = await r.json()
        assert [i["submission_id"] for i in body["items"]] == [sid("root"), sid("anatomy")]
        r = await client.get(
            "/api/v1/submissions", params={"cursor": body["next"], "sla": "overdue"}
        )
        assert [i["submission_id"] for i in (await r.json())["items"]] == [sid("monitoring")]
        r = await client.get("/api/v1/submissions", headers={"Accept": "text/csv"})
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/csv")
        assert (await r.read()).startswith(b"\xef\xbb\xbftracking_code,")
        r = await client.get("/api/v1/submissions", params={"format": "csv", "q": "كتابخانه"})
        assert len((await r.text()).strip().splitlines()) == 4
        r = await client.get("/api/v1/submissions", params={"sla": "soon"})
        assert r.status == 400
        error = await r.json()
        assert error["error"] == "bad_parameter"
        assert error["parameter"] == "sla"
    finally:
        await client.close()

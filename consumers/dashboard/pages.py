"""The work-queue page and the submission page: their data, read from the store.

- :func:`queue_page`: one page of the work queue
  (:class:`~sada.consumers.workqueue.WorkQueueService`) with the filters that
  made it, and the configured units to filter by;
- :func:`submission_page`: what one submission went through: its state and
  deadlines, title and body as sent, and a timeline of its events (creation,
  votes, responses, ratings) and escalations in time order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sada.consumers.store import SqlStore
from sada.consumers.workqueue import WorkQueueService
from sada.pipeline.domain.tracking import parse_tracking_code

FILTERS = ("unit", "subtree", "status", "kind", "channel", "sla", "level", "q")


def queue_page(service: WorkQueueService, params: Mapping[str, str]) -> dict[str, Any]:
    """The queue's items at the pipeline clock, and the filters as given (``lang`` dropped)."""
    query = {k: v for k, v in params.items() if k != "lang" and v != ""}
    page = service.page(query)
    units = sorted(
        ({"unit_id": u.id, "name": u.name} for u in service.config.units.values()),
        key=lambda u: u["unit_id"],
    )
    return {
        **page,
        "filters": {k: query.get(k, "") for k in FILTERS},
        "cursor": query.get("cursor"),
        "units": units,
        "timezone": service.config.calendar.timezone,
    }


def submission_page(
    store: SqlStore, service: WorkQueueService, raw_code: str
) -> dict[str, Any] | None:
    """A submission's page by tracking code (any digits); None if there is none."""
    code = parse_tracking_code(raw_code)
    if code is None:
        return None
    found = store.submission_by_code(code)
    if found is None:
        return None
    service.sync()
    text = store.submission_text(found["submission_id"])
    entries: list[dict[str, Any]] = []
    for e in store.timeline(found["submission_id"]):
        event = e["event"] or {}
        data = event.get("data") or {}
        entries.append(
            {
                "time": e["at"],
                "type": e["type"].removeprefix("sada.").replace(".", "_"),
                "late": e["late"],
                "effective": e["effective"],
                "unit_id": data.get("unit_id"),
                "detail": data.get("kind") or data.get("stance") or data.get("rating"),
                "body": data.get("body") if e["type"] == "sada.response.posted" else None,
                "referred_to": data.get("referred_to_unit_id"),
            }
        )
    for x in found["escalations"]:
        entries.append(
            {
                "time": x["time"],
                "type": "escalated",
                "late": False,
                "effective": True,
                "unit_id": x["from_unit_id"],
                "detail": x["reason"],
                "body": None,
                "referred_to": x["to_unit_id"],
            }
        )
    entries.sort(key=lambda r: (r["time"] or "", r["type"] == "escalated"))
    queued = service.item_of(found["submission_id"]) or {}
    item = {
        **found,
        "title": None,
        "body": None,
        "language": None,
        **(text or {}),
        **{k: queued.get(k) for k in ("sla", "business_hours_left", "business_hours_overdue")},
        "unit_name": queued.get("unit_name", found["unit_id"]),
    }
    return {"submission": item, "timeline": entries, "timezone": service.config.calendar.timezone}

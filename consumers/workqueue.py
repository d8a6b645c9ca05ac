"""The work queue: what operators answer first, as JSON pages or as a CSV file.

:class:`WorkQueueService` checks a query's parameters (a bad one is a
:class:`~sada.pipeline.domain.errors.QueryError` naming it), runs it on the
store (:mod:`sada.consumers.store.queue`) at the pipeline clock, and shapes
each row into an item: tracking code, title, kind, unit, level, support and
opposition, status, SLA status (the domain's rule,
:func:`~sada.pipeline.domain.sla.sla_status`), both deadlines, and the
business hours left to the nearest deadline or past it.

Parameters: ``unit`` (with ``subtree=true``: the unit and every unit under
it), ``status`` (open|closed|withdrawn), ``kind`` and ``channel`` (one or a
comma-separated list), ``sla`` (overdue|at_risk|ok), ``level``, ``q``
(search in title and body, Persian-normalised), ``created_from`` /
``created_to`` (a date, Gregorian or Jalali, in the organisation's time zone,
both ends included; or an RFC 3339 instant), ``limit`` (1-1000, default 50),
``cursor`` (the ``next`` of the previous page), ``format`` (json|csv).
"""

from __future__ import annotations

import base64
import binascii
import csv
import dataclasses
import io
import re
import threading
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson

from sada.consumers.snapshot import latest_clock
from sada.consumers.store import SqlStore
from sada.consumers.store.queue import MAX_LIMIT, NO_DEADLINE, Cutoffs, QueueQuery
from sada.consumers.store.texts import search_tokens
from sada.pipeline.domain.calendar import to_jalali
from sada.pipeline.domain.config import KINDS, Config, parse_date
from sada.pipeline.domain.errors import ConfigError, QueryError
from sada.pipeline.domain.model import format_time, parse_time
from sada.pipeline.domain.rules import Rules
from sada.pipeline.domain.sla import RunningClock, SlaStatus, at_risk_cutoff, sla_status
from sada.pipeline.domain.text import ascii_digits

PARAMETERS: Final = frozenset(
    {
        "unit",
        "subtree",
        "status",
        "kind",
        "channel",
        "sla",
        "level",
        "q",
        "created_from",
        "created_to",
        "limit",
        "cursor",
        "format",
    }
)
STATUSES: Final = ("open", "closed", "withdrawn")
SLA_FILTERS: Final[dict[str, SlaStatus]] = {
    "overdue": "overdue",
    "at_risk": "at_risk",
    "ok": "on_time",
    "on_time": "on_time",
}
DEFAULT_LIMIT: Final = 50
CSV_COLUMNS: Final = (
    "tracking_code",
    "submission_id",
    "title",
    "kind",
    "channel",
    "unit_id",
    "unit_name",
    "level",
    "support",
    "oppose",
    "status",
    "sla",
    "created_at",
    "created_at_jalali",
    "first_response_due",
    "first_response_due_jalali",
    "resolution_due",
    "resolution_due_jalali",
    "business_hours_left",
    "business_hours_overdue",
)
_CHANNEL = re.compile(r"[a-z_]{1,32}")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


def subtree(config: Config, unit: str) -> tuple[str, ...]:
    """``unit`` and every configured unit beneath it."""
    children: dict[str, list[str]] = {}
    for configured in config.units.values():
        if configured.parent is not None:
            children.setdefault(configured.parent, []).append(configured.id)
    out: list[str] = []
    todo = [unit]
    while todo:
        here = todo.pop()
        out.append(here)
        todo.extend(sorted(children.get(here, [])))
    return tuple(sorted(out))


def encode_cursor(after: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(after))).decode("ascii").rstrip("=")


def decode_cursor(text: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        key, sid = orjson.loads(raw)
    except (binascii.Error, ValueError, TypeError) as e:
        raise QueryError("cursor", "not a cursor this API gave out") from e
    if not (isinstance(key, str) and isinstance(sid, str)):
        raise QueryError("cursor", "not a cursor this API gave out")
    return key, sid


def _bound(text: str, parameter: str, zone: ZoneInfo, end: bool) -> datetime:
    """A date (start of that day; with ``end``, start of the next) or an instant."""
    text = ascii_digits(text.strip())
    if "T" in text or " " in text:
        try:
            instant = parse_time(text.replace(" ", "T"))
        except ValueError as e:
            raise QueryError(parameter, f"{text!r} is not a date or an RFC 3339 instant") from e
        return instant + timedelta(microseconds=1) if end else instant
    try:
        day = parse_date(text, parameter)
    except ConfigError as e:
        raise QueryError(parameter, f"{text!r} is not a YYYY-MM-DD date") from e
    if end:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=zone)


def _list(params: Mapping[str, str], name: str) -> tuple[str, ...] | None:
    raw = params.get(name)
    if raw is None or not raw.strip():
        return None
    return tuple(sorted({v.strip() for v in raw.split(",") if v.strip()}))


def _int(params: Mapping[str, str], name: str, low: int, high: int | None) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(ascii_digits(raw))
    except ValueError as e:
        raise QueryError(name, f"{raw!r} is not a whole number") from e
    if value < low or (high is not None and value > high):
        within = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise QueryError(name, f"{value} is out of range ({within})")
    return value


class WorkQueueService:
    """The work queue of one store and configuration.

    ``sync_seconds``: how often the submissions' texts are brought up to the
    archive before a query (0: before every query).
    """

    def __init__(self, store: SqlStore, config: Config, *, sync_seconds: float = 1.0) -> None:
        self.store = store
        self.config = config
        self.rules = Rules.from_config(config)  # its own calendar: not shared across threads
        self.zone = ZoneInfo(config.calendar.timezone)
        self.sync_seconds = sync_seconds
        self._synced = -float("inf")
        self._lock = threading.Lock()

    def parse(self, params: Mapping[str, str], clock: datetime | None) -> QueueQuery:
        """A checked query; raises :class:`QueryError` naming the first bad parameter."""
        for name in sorted(params):
            if name not in PARAMETERS:
                raise QueryError(name, f"unknown parameter; known: {', '.join(sorted(PARAMETERS))}")
        units: tuple[str, ...] | None = None
        unit = params.get("unit", "").strip()
        whole = params.get("subtree", "false").strip().lower()
        if whole not in _TRUE | _FALSE:
            raise QueryError("subtree", f"{params['subtree']!r} is not true or false")
        if unit:
            if self.config.units and unit not in self.config.units:
                raise QueryError("unit", f"{unit!r} is not a unit of the configuration")
            units = subtree(self.config, unit) if whole in _TRUE else (unit,)
        elif whole in _TRUE:
            raise QueryError("subtree", "needs a unit")
        status = params.get("status") or None
        if status is not None and status not in STATUSES:
            raise QueryError("status", f"{status!r} is not one of {', '.join(STATUSES)}")
        kinds = _list(params, "kind")
        for k in kinds or ():
            if k not in KINDS:
                raise QueryError("kind", f"{k!r} is not one of {', '.join(KINDS)}")
        channels = _list(params, "channel")
        for c in channels or ():
            if not _CHANNEL.fullmatch(c):
                raise QueryError("channel", f"{c!r} is not a channel name")
        sla: SlaStatus | None = None
        if params.get("sla"):
            if params["sla"] not in SLA_FILTERS:
                raise QueryError("sla", f"{params['sla']!r} is not one of overdue, at_risk, ok")
            sla = SLA_FILTERS[params["sla"]]
        created_from = created_to = None
        if params.get("created_from", "").strip():
            created_from = _bound(params["created_from"], "created_from", self.zone, end=False)
        if params.get("created_to", "").strip():
            created_to = _bound(params["created_to"], "created_to", self.zone, end=True)
        if created_from and created_to and created_to <= created_from:
            raise QueryError("created_to", "is before created_from")
        fmt = params.get("format", "json")
        if fmt not in ("json", "csv"):
            raise QueryError("format", f"{fmt!r} is not json or csv")
        limit = _int(params, "limit", 1, MAX_LIMIT) or DEFAULT_LIMIT
        cursor = params.get("cursor") or None
        return QueueQuery(
            units=units,
            status=status,
            kinds=kinds,
            channels=channels,
            sla=sla,
            level=_int(params, "level", 0, None),
            tokens=tuple(search_tokens(params.get("q", ""))),
            created_from=created_from,
            created_to=created_to,
            limit=limit,
            after=None if cursor is None else decode_cursor(cursor),
            cutoffs=self._cutoffs(clock),
            clock=clock,
        )

    def _cutoffs(self, clock: datetime | None) -> Cutoffs:
        if clock is None:
            return {}
        return {
            kind: (
                at_risk_cutoff(self.rules.calendar, clock, sla.first_response_hours),
                at_risk_cutoff(self.rules.calendar, clock, sla.resolution_hours),
            )
            for kind, sla in sorted(self.rules.sla.items())
        }

    def sync(self) -> None:
        """Bring the texts up to the archive, at most once per ``sync_seconds``."""
        with self._lock:
            now = time.monotonic()
            if now - self._synced >= self.sync_seconds:
                self.store.sync_texts()
                self._synced = now

    def page(self, params: Mapping[str, str]) -> dict[str, Any]:
        """``{"items": [...], "next": cursor | None, "clock": instant | None}``. Blocking."""
        self.sync()
        clock = latest_clock(self.store)
        query = self.parse(params, clock)
        rows, after = self.store.work_queue(query)
        return {
            "items": [self.item(r, clock) for r in rows],
            "next": None if after is None else encode_cursor(after),
            "clock": None if clock is None else format_time(clock),
        }

    def item_of(self, submission_id: str) -> dict[str, Any] | None:
        """One submission as a queue item (SLA status, business time left), or None."""
        clock = latest_clock(self.store)
        query = QueueQuery(ids=(submission_id,), limit=1, cutoffs=self._cutoffs(clock), clock=clock)
        rows, _ = self.store.work_queue(query)
        return self.item(rows[0], clock) if rows else None

    def csv(self, params: Mapping[str, str]) -> str:
        """The query's rows as CSV text, with a BOM: every page unless ``limit`` is given."""
        self.sync()
        clock = latest_clock(self.store)
        query = self.parse(params, clock)
        out = io.StringIO()
        out.write("\ufeff")  # spreadsheet tools read the file as UTF-8 only with it
        writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore", lineterminator="\r\n")
        writer.writeheader()
        whole = not params.get("limit")
        while True:
            rows, after = self.store.work_queue(query)
            for r in rows:
                writer.writerow(self.csv_row(self.item(r, clock)))
            if after is None or not whole:
                break
            query = dataclasses.replace(query, after=after, limit=MAX_LIMIT)
        return out.getvalue()

    def item(self, r: Mapping[str, Any], clock: datetime | None) -> dict[str, Any]:
        """One row as the API shows it."""
        sla_hours = self.rules.sla.get(r["kind"])
        state: SlaStatus | None = None
        if r["status"] == "open":
            running = []
            if sla_hours is not None:
                if r["first_response_due"] is not None:
                    running.append(
                        RunningClock(
                            r["arrived_at"], sla_hours.first_response_hours, r["first_response_due"]
                        )
                    )
                if r["resolution_due"] is not None:
                    running.append(
                        RunningClock(
                            r["arrived_at"], sla_hours.resolution_hours, r["resolution_due"]
                        )
                    )
            flagged = bool(r["first_response_overdue"] or r["resolution_overdue"])
            state = sla_status(self.rules.calendar, clock, running, flagged_overdue=flagged)
        nearest = None if r["deadline_key"] == NO_DEADLINE else parse_time(r["deadline_key"])
        left = overdue = None
        if nearest is not None and clock is not None:
            if nearest < clock:
                overdue = round(self.rules.calendar.business_hours_between(nearest, clock), 2)
            else:
                left = round(self.rules.calendar.business_hours_between(clock, nearest), 2)
        unit = self.config.units.get(r["unit_id"])
        return {
            "tracking_code": r["tracking_code"],
            "submission_id": r["submission_id"],
            "title": r["title"],
            "kind": r["kind"],
            "channel": r["channel"],
            "unit_id": r["unit_id"],
            "unit_name": unit.name if unit is not None else r["unit_id"],
            "level": r["level"],
            "support": r["support"],
            "oppose": r["oppose"],
            "status": r["status"],
            "sla": state,
            "created_at": format_time(r["created_at"]),
            "deadlines": {
                "first_response": _time(r["first_response_due"]),
                "resolution": _time(r["resolution_due"]),
            },
            "nearest_deadline": _time(nearest),
            "business_hours_left": left,
            "business_hours_overdue": overdue,
        }

    def csv_row(self, item: Mapping[str, Any]) -> dict[str, Any]:
        tz = self.config.calendar.timezone
        row = dict(item)
        row["first_response_due"] = item["deadlines"]["first_response"]
        row["resolution_due"] = item["deadlines"]["resolution"]
        for name in ("created_at", "first_response_due", "resolution_due"):
            value = row[name]
            row[f"{name}_jalali"] = "" if value is None else to_jalali(parse_time(value), tz)
        return {k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS}


def _time(dt: datetime | None) -> str | None:
    return None if dt is None else format_time(dt)

"""Periodic reports for management: per unit, what it received and how it answered, ranked.

:func:`build_report` reads the store once and ranks the units over a period
and over the one before with :func:`~sada.consumers.snapshot.rank_units`, the
dashboard's ranking restricted to the period: received (arrivals at the
unit), first responses in time and late, escalations away, mean
satisfaction, rank, and the change of rank (positive: climbed). Periods are
the organisation's, in its time zone: a week starts on Saturday; a month is
a Jalali month in the Persian report and a Gregorian one in the English.
The current period is the one holding the pipeline clock (so far); ``at``
names another instant inside the wanted period.

:func:`report_csv` writes the rows as CSV (UTF-8 with a BOM, for spreadsheet
tools reading Persian), with the period in ISO and Jalali dates.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, time, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

import jdatetime

from sada.consumers.snapshot import latest_clock, rank_units
from sada.consumers.store import SqlStore
from sada.pipeline.domain.config import Config
from sada.pipeline.domain.errors import QueryError
from sada.pipeline.domain.rules import Rules

Period = Literal["week", "month"]
PERIODS: Final = ("week", "month")
CSV_COLUMNS: Final = (
    "period_start",
    "period_end",
    "period_start_jalali",
    "period_end_jalali",
    "unit_id",
    "unit_name",
    "received",
    "answered_in_time",
    "late",
    "in_time_ratio",
    "escalated",
    "overdue_escalations",
    "satisfaction_mean",
    "ratings",
    "rank",
    "previous_rank",
    "rank_change",
)
_SATURDAY = 5


def period_bounds(period: str, day: date, lang: str) -> tuple[date, date]:
    """The period holding ``day``: [first day, first day of the next)."""
    if period == "week":
        start = day - timedelta(days=(day.weekday() - _SATURDAY) % 7)
        return start, start + timedelta(days=7)
    if period != "month":
        raise QueryError("period", f"{period!r} is not week or month")
    if lang == "fa":
        j = jdatetime.date.fromgregorian(date=day)
        first = jdatetime.date(j.year, j.month, 1)
        following = (
            jdatetime.date(j.year + 1, 1, 1)
            if j.month == 12
            else jdatetime.date(j.year, j.month + 1, 1)
        )
        return first.togregorian(), following.togregorian()
    first_g = day.replace(day=1)
    following_g = (first_g + timedelta(days=32)).replace(day=1)
    return first_g, following_g


def jalali(day: date) -> str:
    return str(jdatetime.date.fromgregorian(date=day).strftime("%Y/%m/%d"))


def build_report(
    store: SqlStore,
    config: Config,
    period: str,
    *,
    unit: str | None = None,
    lang: str = "fa",
    at: datetime | None = None,
) -> dict[str, Any]:
    """The report of the period holding ``at`` (default: the pipeline clock)."""
    if unit is not None and config.units and unit not in config.units:
        raise QueryError("unit", f"{unit!r} is not a unit of the configuration")
    zone = ZoneInfo(config.calendar.timezone)
    at = at or latest_clock(store) or datetime.now(zone)
    start, end = period_bounds(period, at.astimezone(zone).date(), lang)
    prev_start, prev_end = period_bounds(period, start - timedelta(days=1), lang)
    rules = Rules.from_config(config)
    history = store.unit_history()

    def ranked(lo: date, hi: date) -> list[dict[str, Any]]:
        return rank_units(
            history,
            rules,
            datetime.combine(lo, time(), tzinfo=zone),
            datetime.combine(hi, time(), tzinfo=zone),
        )

    current = ranked(start, end)
    previous = {r["unit_id"]: r["position"] for r in ranked(prev_start, prev_end)}
    rows = []
    for r in current:
        if unit is not None and r["unit_id"] != unit:
            continue
        before = previous.get(r["unit_id"])
        configured = config.units.get(r["unit_id"])
        rows.append(
            {
                "unit_id": r["unit_id"],
                "unit_name": configured.name if configured else r["unit_id"],
                "received": r["received"],
                "answered_in_time": r["first_responses_in_time"],
                "late": r["first_responses_late"],
                "in_time_ratio": r["in_time_ratio"],
                "escalated": r["escalations_away"],
                "overdue_escalations": r["overdue_escalations_away"],
                "satisfaction_mean": r["satisfaction_mean"],
                "ratings": r["ratings"],
                "rank": r["position"],
                "previous_rank": before,
                "rank_change": None if before is None else before - r["position"],
            }
        )
    return {
        "period": period,
        "lang": lang,
        "unit": unit,
        "start": start.isoformat(),
        "end": (end - timedelta(days=1)).isoformat(),  # the last day, included
        "start_jalali": jalali(start),
        "end_jalali": jalali(end - timedelta(days=1)),
        "previous_start": prev_start.isoformat(),
        "previous_end": (prev_end - timedelta(days=1)).isoformat(),
        "clock": at.isoformat(),
        "timezone": config.calendar.timezone,
        "rows": rows,
    }


def report_csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    period = {
        "period_start": report["start"],
        "period_end": report["end"],
        "period_start_jalali": report["start_jalali"],
        "period_end_jalali": report["end_jalali"],
    }
    for row in report["rows"]:
        values = {**period, **row}
        writer.writerow(
            {k: "" if values.get(k) is None else _plain(values[k]) for k in CSV_COLUMNS}
        )
    return out.getvalue()


def _plain(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value

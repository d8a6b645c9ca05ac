"""What the dashboard's charts show, read from the store at the pipeline clock.

- intake and escalations per day: the last :data:`DAYS` days of the
  organisation's calendar (its time zone), ending on the clock's day;
- SLA compliance per unit over weeks: the share of first responses in time
  per unit in each of the last :data:`WEEKS` weeks (weeks start on Saturday),
  by the same rule as the units' ranking (:func:`~sada.consumers.snapshot.rank_units`);
- backlog by age: open submissions by the time since their creation;
- mean business hours to first response (per arrival, as the projector
  measures it: :func:`~sada.consumers.snapshot.first_response_hours`) and
  from creation to closure, by kind, over everything the store holds.

Time is the pipeline clock (event time), so a replay draws the same charts.
"""

from __future__ import annotations

import statistics
from datetime import date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from sada.consumers.snapshot import first_response_hours, latest_clock, rank_units
from sada.consumers.store import SqlStore
from sada.pipeline.domain.rules import Rules

DAYS: Final = 14
WEEKS: Final = 8
# Age bands of the backlog, in days since creation: [low, high).
AGE_BANDS: Final = ((0, 1), (1, 3), (3, 7), (7, 14), (14, 30), (30, None))
_SATURDAY = 5  # date.weekday()


def week_start(day: date) -> date:
    """The Saturday on or before ``day``: the Iranian week's first day."""
    return day - timedelta(days=(day.weekday() - _SATURDAY) % 7)


def trends(
    store: SqlStore, rules: Rules, timezone: str, clock: datetime | None = None
) -> dict[str, Any]:
    """The charts' data as plain JSON: days, weeks and bands as ISO dates or day counts."""
    zone = ZoneInfo(timezone)
    clock = clock or latest_clock(store)
    history = store.unit_history()
    means = _means(store, rules, history)
    if clock is None:
        return {
            **means,
            "clock": None,
            "days": [],
            "intake": [],
            "escalated": [],
            "weeks": [],
            "units": [],
            "age_bands": [list(b) for b in AGE_BANDS],
            "backlog": [0] * len(AGE_BANDS),
        }
    today = clock.astimezone(zone).date()
    first_day = today - timedelta(days=DAYS - 1)
    since = datetime.combine(first_day, time(), tzinfo=zone)
    got = store.instants_since(since)
    days = [first_day + timedelta(days=i) for i in range(DAYS)]
    index = {d: i for i, d in enumerate(days)}
    intake = [0] * DAYS
    escalated = [0] * DAYS
    for t in got["created"]:
        i = index.get(t.astimezone(zone).date())
        if i is not None:
            intake[i] += 1
    for t in got["escalated"]:
        i = index.get(t.astimezone(zone).date())
        if i is not None:
            escalated[i] += 1
    backlog = [0] * len(AGE_BANDS)
    for t in got["open_created"]:
        age = (clock - t).total_seconds() / 86400
        for b, (low, high) in enumerate(AGE_BANDS):
            if age >= low and (high is None or age < high):
                backlog[b] += 1
                break
    this_week = week_start(today)
    weeks = [this_week - timedelta(weeks=WEEKS - 1 - i) for i in range(WEEKS)]
    compliance: dict[str, list[float | None]] = {}
    for w, start in enumerate(weeks):
        lo = datetime.combine(start, time(), tzinfo=zone)
        hi = lo + timedelta(weeks=1)
        for row in rank_units(history, rules, lo, hi):
            compliance.setdefault(row["unit_id"], [None] * WEEKS)[w] = row["in_time_ratio"]
    units = [
        {"unit_id": u, "in_time_ratio": ratios}
        for u, ratios in sorted(compliance.items())
        if any(r is not None for r in ratios)
    ]
    return {
        "clock": clock.isoformat(),
        "days": [d.isoformat() for d in days],
        "intake": intake,
        "escalated": escalated,
        "weeks": [d.isoformat() for d in weeks],
        "units": units,
        "age_bands": [list(b) for b in AGE_BANDS],
        "backlog": backlog,
        **means,
    }


def _means(store: SqlStore, rules: Rules, history: Any) -> dict[str, dict[str, float]]:
    first = {
        kind: statistics.fmean(hours)
        for kind, hours in first_response_hours(history, rules).items()
        if hours
    }
    closing: dict[str, list[float]] = {}
    for kind, created, closed in store.closures():
        closing.setdefault(kind, []).append(rules.calendar.business_hours_between(created, closed))
    resolution = {kind: statistics.fmean(h) for kind, h in closing.items() if h}
    return {"first_response_mean_hours": first, "resolution_mean_hours": resolution}

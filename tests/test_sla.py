"""The SLA rule lives once, in the domain, and the store's SQL cannot drift from it.

- :func:`~sada.pipeline.domain.sla.sla_status` at its boundaries: the 80%
  instant and the deadline, to the microsecond; flags first; no clock;
- :func:`~sada.pipeline.domain.sla.at_risk_cutoff` is the exact inverse of the
  80% instant, over the organisation's business calendar;
- the store's ``CASE`` (``SqlStore.sla_counts``, fed the cutoffs by
  ``build_snapshot``) gives every submission of a SQLite store with known
  contents the status the domain rule gives it, at every boundary instant.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sada.consumers.snapshot import build_snapshot
from sada.consumers.store import SqlStore
from sada.infra import metric_labels
from sada.pipeline.domain.calendar import BusinessCalendar
from sada.pipeline.domain.config import KINDS, load_config
from sada.pipeline.domain.model import SubmissionState
from sada.pipeline.domain.ports import BatchWrite, Checkpoint
from sada.pipeline.domain.rules import Rules
from sada.pipeline.domain.sla import (
    AT_RISK_FRACTION,
    STATUSES,
    RunningClock,
    at_risk_cutoff,
    at_risk_instant,
    sla_status,
)

RULES = Rules.from_config(load_config())
CALENDAR = RULES.calendar
TEHRAN = ZoneInfo("Asia/Tehran")
US = timedelta(microseconds=1)


def tehran(day: int, hour: int, minute: int = 0) -> datetime:
    """An instant of the week of Saturday 16 May 2026 (no holidays), Tehran time, as UTC."""
    return (datetime(2026, 5, 16, hour, minute, tzinfo=TEHRAN) + timedelta(days=day)).astimezone(
        UTC
    )


def test_the_statuses_are_a_closed_set_shared_with_the_metrics() -> None:
    assert STATUSES == ("on_time", "at_risk", "overdue")
    assert frozenset(STATUSES) == metric_labels.STATUSES
    assert AT_RISK_FRACTION == 0.8


def test_status_at_the_boundaries_of_one_clock() -> None:
    start = tehran(0, 8)  # Saturday 08:00; 16 business hours: due Sunday 16:00
    running = [RunningClock(start, 16, CALENDAR.add_business_hours(start, 16))]
    eighty = tehran(1, 12, 48)  # 8 hours on Saturday, 4.8 on Sunday
    assert at_risk_instant(CALENDAR, start, 16) == eighty
    due = tehran(1, 16)
    assert running[0].due == due

    def at(clock: datetime | None) -> str:
        return sla_status(CALENDAR, clock, running)

    assert at(start) == "on_time"
    assert at(eighty - US) == "on_time"
    assert at(eighty) == "at_risk"
    assert at(due) == "at_risk"  # a deadline fires strictly after its instant
    assert at(due + US) == "overdue"
    assert at(None) == "on_time"


def test_flags_come_first_and_stopped_clocks_count_for_nothing() -> None:
    start = tehran(0, 8)
    late = RunningClock(start, 16, CALENDAR.add_business_hours(start, 16))
    for clock in (None, start, tehran(4, 15)):
        assert sla_status(CALENDAR, clock, [], flagged_overdue=True) == "overdue"
        assert sla_status(CALENDAR, clock, []) == "on_time"
    assert sla_status(CALENDAR, tehran(4, 15), [late]) == "overdue"
    # Either clock decides: the shorter one at risk makes the submission at risk.
    long = RunningClock(start, 80, CALENDAR.add_business_hours(start, 80))
    assert sla_status(CALENDAR, tehran(1, 13), [long]) == "on_time"
    assert sla_status(CALENDAR, tehran(1, 13), [long, late]) == "at_risk"


@settings(max_examples=150, deadline=None)
@given(
    start=st.integers(0, 21 * 86_400_000_000),
    elapsed=st.integers(0, 42 * 86_400_000_000),
    hours=st.sampled_from(
        sorted(
            {h for s in RULES.sla.values() for h in (s.first_response_hours, s.resolution_hours)}
        )
    ),
)
def test_the_cutoff_is_the_exact_inverse_of_the_80_percent_instant(
    start: int, elapsed: int, hours: float
) -> None:
    begin = tehran(0, 0) + timedelta(microseconds=start)
    clock = begin + timedelta(microseconds=elapsed)
    cutoff = at_risk_cutoff(CALENDAR, clock, hours)
    reached = at_risk_instant(CALENDAR, begin, hours) <= clock
    assert reached == (cutoff is not None and begin <= cutoff)
    if cutoff is not None:
        assert at_risk_instant(CALENDAR, cutoff, hours) <= clock
        assert cutoff == clock or at_risk_instant(CALENDAR, cutoff + US, hours) > clock


def test_a_calendar_without_working_time_has_no_cutoff() -> None:
    config = load_config().calendar
    first = tehran(0, 8).astimezone(TEHRAN).date()
    # Every day of the look-back a holiday (20,000 days back from the clock).
    holidays = tuple(first - timedelta(days=d) for d in range(-3, 20_100))
    calendar = BusinessCalendar(replace(config, holidays=holidays))
    assert at_risk_cutoff(calendar, tehran(0, 12), 16) is None


# -- the store's SQL against the rule ----------------------------------------------------

ARRIVALS = (
    tehran(0, 8),  # Saturday opening
    tehran(0, 13, 17),  # mid-afternoon
    tehran(4, 15, 59),  # Wednesday, a minute before closing
    tehran(5, 10),  # Thursday: not a workday
)
# Which clocks run, and which flags are set: (first response, resolution, flags).
SHAPES = (
    (True, True, (False, False)),
    (False, True, (False, False)),
    (False, False, (False, False)),
    (True, True, (True, False)),
    (False, True, (False, True)),
)


Shape = tuple[bool, bool, tuple[bool, bool]]


def _state(i: int, kind: str, arrived: datetime, shape: Shape) -> SubmissionState:
    first_runs, resolution_runs, (first_flag, resolution_flag) = shape
    first_due, resolution_due = RULES.deadlines(kind, arrived)
    return SubmissionState(
        submission_id=f"s-{i:03d}",
        tracking_code=f"{i:010d}",
        kind=kind,
        channel="web",
        created_at=arrived,
        status="open",
        unit_id=f"unit-{i:03d}",  # one unit each: the counts name the submission
        level=0,
        support=0,
        oppose=0,
        arrived_at=arrived,
        first_response_due=first_due if first_runs else None,
        resolution_due=resolution_due if resolution_runs else None,
        first_response_overdue=first_flag,
        resolution_overdue=resolution_flag,
        first_response_at=None if first_runs else arrived + timedelta(hours=1),
        closed_at=None,
        satisfaction=None,
        escalations=0,
        updated_at=arrived,
    )


def _cases() -> list[SubmissionState]:
    states = []
    for kind in KINDS:
        for arrived in ARRIVALS:
            for shape in SHAPES:
                states.append(_state(len(states), kind, arrived, shape))
    # Not open: never counted, whatever their clocks say.
    states.append(
        replace(_state(len(states), "complaint", ARRIVALS[0], SHAPES[0]), status="closed")
    )
    states.append(
        replace(_state(len(states), "question", ARRIVALS[1], SHAPES[0]), status="withdrawn")
    )
    return states


CASES = _cases()


def _running(s: SubmissionState) -> list[RunningClock]:
    hours = RULES.sla[s.kind]
    return [
        RunningClock(s.arrived_at, h, due)
        for h, due in (
            (hours.first_response_hours, s.first_response_due),
            (hours.resolution_hours, s.resolution_due),
        )
        if due is not None
    ]


def _flags(s: SubmissionState) -> bool:
    return s.first_response_overdue or s.resolution_overdue


def _clocks() -> list[datetime]:
    """Every instant where a case's status may change, a microsecond either side, and a few more."""
    found = {tehran(d, h) for d in range(0, 28, 3) for h in (0, 9, 12, 16)}
    for s in CASES:
        for c in _running(s):
            for edge in (at_risk_instant(CALENDAR, c.start, c.hours), c.due):
                found.update((edge - US, edge, edge + US))
    return sorted(found)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqlStore]:
    path: Path = tmp_path_factory.mktemp("sla") / "sada.db"
    s = SqlStore(f"sqlite:///{path}")
    s.migrate()
    s.write(BatchWrite(partition=0, checkpoint=Checkpoint(0), states=CASES))
    yield s
    s.close()


def _expected(clock: datetime | None) -> dict[tuple[str, str, str], int]:
    return {
        (
            s.unit_id,
            s.kind,
            sla_status(
                CALENDAR,
                clock,
                _running(s),
                flagged_overdue=_flags(s),
            ),
        ): 1
        for s in CASES
        if s.status == "open"
    }


def test_the_store_counts_every_status_as_the_rule_gives_it(store: SqlStore) -> None:
    seen: dict[str, set[str]] = {}
    for clock in _clocks():
        got = build_snapshot(store, RULES, clock).open_submissions
        assert got == _expected(clock), f"at {clock.isoformat()}"
        for unit, _kind, status in got:
            seen.setdefault(unit, set()).add(status)
    # Every case with a running clock and no flag passes through each status,
    # so the comparison was made on both sides of both boundaries.
    moving = [s.unit_id for s in CASES if s.status == "open" and _running(s)]
    moving = [u for u in moving if not any(_flags(s) for s in CASES if s.unit_id == u)]
    assert len(moving) == len(KINDS) * len(ARRIVALS) * 2
    assert all(seen[u] == set(STATUSES) for u in moving), seen


def test_without_a_clock_the_store_counts_only_the_flags(store: SqlStore) -> None:
    # The store's checkpoint has no clock either: only the flags make a submission overdue.
    got = build_snapshot(store, RULES, None).open_submissions
    assert got == _expected(None)
    assert {status for _u, _k, status in got} == {"on_time", "overdue"}

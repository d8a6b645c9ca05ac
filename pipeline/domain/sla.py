"""SLA status of an open submission at an instant: on time, at risk, or overdue.

A submission runs up to two clocks, both started when it reached the unit
holding it (``arrived_at``): the first-response clock until its first
response, the resolution clock until closure. Each runs for the SLA hours of
its kind, in business time, to its deadline. Its status at ``clock`` (the
pipeline clock: event time, so a replay shows the same statuses), first match
wins:

- ``overdue``: a deadline has passed: its overdue flag is set (at the root of
  the tree, where nothing moves, the flag stays), or a running clock's
  deadline is before ``clock`` (a deadline fires strictly after its instant,
  so at the deadline itself it has not passed yet);
- ``at_risk``: a running clock has reached :data:`AT_RISK_FRACTION` of its
  span: the instant at which that share of its business hours has elapsed
  since its start (:func:`at_risk_instant`) is at or before ``clock``;
- ``on_time`` otherwise.

Without a clock (a pipeline that has not started one) only the flags count.

:func:`at_risk_cutoff` turns the at-risk test around for a whole table: at a
given clock, a clock of given hours is at risk exactly when it started at or
before the cutoff, so a query compares starts with one instant per kind.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sada.pipeline.domain.model import SubmissionState
from sada.pipeline.domain.rules import BusinessClock, Rules
from sada.pipeline.domain.vocabulary import SLA_STATUSES, SlaStatus

__all__ = [
    "AT_RISK_FRACTION",
    "STATUSES",
    "AtRiskMark",
    "RunningClock",
    "SlaStatus",
    "at_risk_cutoff",
    "at_risk_instant",
    "at_risk_marks",
    "sla_status",
    "still_at_risk",
]

STATUSES: Final[tuple[SlaStatus, ...]] = SLA_STATUSES
AT_RISK_FRACTION: Final = 0.8

_ONE_US = timedelta(microseconds=1)
# How far back a cutoff is searched for: a calendar with no working time for
# this long has no submission at risk.
_MAX_LOOKBACK = timedelta(days=20_000)


@dataclass(frozen=True, slots=True)
class RunningClock:
    """A running SLA clock: started at ``start``, ``hours`` business hours long, due at ``due``."""

    start: datetime
    hours: float
    due: datetime


def at_risk_instant(calendar: BusinessClock, start: datetime, hours: float) -> datetime:
    """When a clock of ``hours`` business hours started at ``start`` becomes at risk."""
    return calendar.add_business_hours(start, hours * AT_RISK_FRACTION)


def sla_status(
    calendar: BusinessClock,
    clock: datetime | None,
    running: Iterable[RunningClock],
    *,
    flagged_overdue: bool = False,
) -> SlaStatus:
    """The SLA status at ``clock`` of a submission with the ``running`` clocks.

    ``flagged_overdue``: one of its overdue flags is set. ``None`` for
    ``clock``: only the flags count.
    """
    if flagged_overdue:
        return "overdue"
    if clock is None:
        return "on_time"
    clocks = tuple(running)
    if any(c.due < clock for c in clocks):
        return "overdue"
    if any(at_risk_instant(calendar, c.start, c.hours) <= clock for c in clocks):
        return "at_risk"
    return "on_time"


def at_risk_cutoff(calendar: BusinessClock, clock: datetime, hours: float) -> datetime | None:
    """The latest start of a clock of ``hours`` business hours that is at risk at ``clock``.

    ``at_risk_instant(calendar, start, hours) <= clock`` holds for every
    ``start`` up to some instant and for none after (adding business hours
    never moves an instant back), so one bisection per (kind, clock), to the
    microsecond, replaces a calendar computation per submission. ``None`` when
    no start within the look-back qualifies.
    """

    def reached(start: datetime) -> bool:
        return at_risk_instant(calendar, start, hours) <= clock

    hi = clock
    if reached(hi):
        return clock
    step = timedelta(days=1)
    while not reached(hi - step):
        step *= 2
        if step > _MAX_LOOKBACK:
            return None
    lo = hi - step  # reached(lo), not reached(hi)
    while hi - lo > _ONE_US:
        mid = lo + (hi - lo) // 2
        if reached(mid):
            lo = mid
        else:
            hi = mid
    return lo


# When a running clock becomes at risk: (instant, submission, clock, unit, deadline). A
# tuple, so that a heap orders marks by instant, then submission, then clock.
AtRiskMark = tuple[datetime, str, str, str, datetime]


def at_risk_marks(state: SubmissionState, rules: Rules) -> list[AtRiskMark]:
    """The instants at which the clocks ``state`` runs at its unit become at risk.

    Both clocks start at ``arrived_at``; a stopped clock (``None`` deadline) or
    a closed submission has none.
    """
    if state.status != "open":
        return []
    hours = rules.sla[state.kind]
    out: list[AtRiskMark] = []
    for clock, due, span in (
        ("first_response", state.first_response_due, hours.first_response_hours),
        ("resolution", state.resolution_due, hours.resolution_hours),
    ):
        if due is not None:
            instant = at_risk_instant(rules.calendar, state.arrived_at, span)
            out.append((instant, state.submission_id, clock, state.unit_id, due))
    return out


def still_at_risk(state: SubmissionState | None, mark: AtRiskMark) -> bool:
    """Whether the clock ``mark`` was made for still runs at its unit, to the same deadline."""
    if state is None or state.status != "open" or state.unit_id != mark[3]:
        return False
    if mark[2] == "first_response":
        return state.first_response_due == mark[4] and not state.first_response_overdue
    return state.resolution_due == mark[4] and not state.resolution_overdue

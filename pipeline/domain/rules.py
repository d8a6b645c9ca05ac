"""The configurable rules the decision core applies: ladder, SLA hours, unit tree, calendar.

Built once from the organisation's :class:`~sada.pipeline.domain.config.Config`; pure data plus
the business-time calendar, so decisions stay a function of events alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sada.pipeline.domain.config import DEFAULT_SLA, Config, SlaHours


class BusinessClock(Protocol):
    def add_business_hours(self, t: datetime, hours: float) -> datetime: ...

    def business_hours_between(self, a: datetime, b: datetime) -> float: ...


@dataclass(frozen=True)
class Rules:
    calendar: BusinessClock
    ladder: tuple[int, ...] = (50, 200, 1000)
    sla: Mapping[str, SlaHours] = field(default_factory=lambda: dict(DEFAULT_SLA))
    parents: Mapping[str, str | None] = field(default_factory=dict)
    monitoring: str | None = None  # the unit told of everything overdue

    @classmethod
    def from_config(cls, config: Config, calendar: BusinessClock | None = None) -> Rules:
        if calendar is None:
            from sada.pipeline.domain.calendar import BusinessCalendar

            calendar = BusinessCalendar(config.calendar)
        return cls(
            calendar=calendar,
            ladder=config.ladder,
            sla=dict(config.sla),
            parents={u.id: u.parent for u in config.units.values()},
            monitoring=config.monitoring_unit,
        )

    def parent_of(self, unit_id: str) -> str | None:
        return self.parents.get(unit_id)

    def support_target(self, support: int) -> int:
        """Target level of the support ladder: how many thresholds support has reached."""
        return sum(1 for threshold in self.ladder if support >= threshold)

    def deadlines(self, kind: str, start: datetime) -> tuple[datetime, datetime]:
        """First-response and resolution deadlines of clocks started at ``start``."""
        hours = self.sla[kind]
        return (
            self.calendar.add_business_hours(start, hours.first_response_hours),
            self.calendar.add_business_hours(start, hours.resolution_hours),
        )

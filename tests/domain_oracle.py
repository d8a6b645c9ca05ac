"""A reference model of the domain rules for one submission, written for clarity, not speed.

Tests compare the pipeline's decisions with this model. It restates the rules
of ``domain.md`` directly and shares no code with the decision core: its own
event types, its own business-time arithmetic (walking the calendar one local
day at a time) and its own escalation loop (one deadline at a time, earliest
first). Only ``sada.pipeline.domain.config`` types are used, to read the organisation's
calendar, ladder, SLA hours and unit tree.

Instants are timezone-aware datetimes; histories put events on whole minutes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from sada.pipeline.domain.config import CalendarConfig, Config, SlaHours

CLOSING = {"answer", "resolution", "rejection"}


# -- events of the model ----------------------------------------------------------


@dataclass(frozen=True)
class Create:
    key: str
    kind: str
    unit: str


@dataclass(frozen=True)
class Vote:
    key: str
    voter: str
    stance: str | None  # "support", "oppose", or None for a retraction


@dataclass(frozen=True)
class Follow:
    key: str
    person: str
    on: bool  # followed (True) or unfollowed (False)


@dataclass(frozen=True)
class Respond:
    key: str
    unit: str
    kind: str  # acknowledgement, answer, referral, resolution, rejection
    referred_to: str | None = None


@dataclass(frozen=True)
class Withdraw:
    key: str


@dataclass(frozen=True)
class Rate:
    key: str
    rating: int


Event = Create | Vote | Follow | Respond | Withdraw | Rate


@dataclass(frozen=True)
class Escalation:
    reason: str
    from_unit: str
    to_unit: str
    from_level: int
    to_level: int
    at: datetime
    deadline: datetime | None
    support: int


# -- business time ------------------------------------------------------------------


class NaiveCalendar:
    """Working hours by walking local days: for each day, its working interval, in order."""

    def __init__(self, cfg: CalendarConfig) -> None:
        self.zone = ZoneInfo(cfg.timezone)
        self.workdays = set(cfg.workdays)
        self.holidays = set(cfg.holidays)
        self.opens = cfg.opens
        self.closes = cfg.closes

    def working_interval(self, day: date) -> tuple[datetime, datetime] | None:
        if day.weekday() not in self.workdays or day in self.holidays:
            return None
        start = datetime.combine(day, self.opens, tzinfo=self.zone).astimezone(UTC)
        end = datetime.combine(day, self.closes, tzinfo=self.zone).astimezone(UTC)
        return start, end

    def add_hours(self, t: datetime, hours: float) -> datetime:
        """The instant at which ``hours`` working hours have elapsed after ``t``."""
        remaining = timedelta(hours=hours)
        t = t.astimezone(UTC)
        day = t.astimezone(self.zone).date()
        while True:
            interval = self.working_interval(day)
            if interval is not None:
                start, end = max(interval[0], t), interval[1]
                if start < end:
                    if end - start >= remaining:
                        return start + remaining
                    remaining -= end - start
            day += timedelta(days=1)


# -- the submission -------------------------------------------------------------------


@dataclass
class Outcome:
    status: str = "open"
    unit: str = ""
    level: int = 0
    support: int = 0
    oppose: int = 0
    first_response_due: datetime | None = None
    resolution_due: datetime | None = None
    first_response_overdue: bool = False
    resolution_overdue: bool = False
    escalations: list[Escalation] = field(default_factory=list)
    # Who follows it besides its author: whoever last followed it or voted support,
    # unless they unfollowed it or changed their stance since.
    followers: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Model:
    """The rules of one organisation, as the reference model reads them."""

    calendar: NaiveCalendar
    ladder: tuple[int, ...]
    sla: Mapping[str, SlaHours]
    parents: Mapping[str, str | None]

    @classmethod
    def from_config(cls, config: Config, ladder: tuple[int, ...] | None = None) -> Model:
        return cls(
            calendar=NaiveCalendar(config.calendar),
            ladder=config.ladder if ladder is None else ladder,
            sla=config.sla,
            parents={u.id: u.parent for u in config.units.values()},
        )


class Submission:
    """One submission, fed its events one at a time in order of effective instant."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.created = False
        self.kind = ""
        self.out = Outcome()
        self.stances: dict[str, str] = {}
        self.seen: set[str] = set()

    # Clocks start whenever the submission arrives at a unit (creation included).
    def _arrive(self, unit: str, at: datetime) -> None:
        hours = self.model.sla[self.kind]
        o = self.out
        o.unit = unit
        o.first_response_due = self.model.calendar.add_hours(at, hours.first_response_hours)
        o.resolution_due = self.model.calendar.add_hours(at, hours.resolution_hours)
        o.first_response_overdue = False
        o.resolution_overdue = False

    def _escalate(self, reason: str, at: datetime, deadline: datetime | None) -> bool:
        o = self.out
        parent = self.model.parents.get(o.unit)
        if parent is None:
            return False
        o.escalations.append(
            Escalation(reason, o.unit, parent, o.level, o.level + 1, at, deadline, o.support)
        )
        o.level += 1
        self._arrive(parent, at)
        return True

    def _ladder(self, at: datetime) -> None:
        """While level < number of thresholds reached by support, escalate one step."""
        o = self.out
        if o.status != "open":
            return
        while o.level < sum(1 for n in self.model.ladder if o.support >= n):
            if not self._escalate("support_threshold", at, None):
                return

    def next_deadlines(self) -> list[datetime]:
        """The deadlines still able to fire (none once closed or withdrawn)."""
        o = self.out
        if o.status != "open":
            return []
        dues = [(o.first_response_due, o.first_response_overdue)]
        dues.append((o.resolution_due, o.resolution_overdue))
        return [due for due, overdue in dues if due is not None and not overdue]

    def run_clock(self, until: datetime) -> None:
        """Fire, earliest first, every deadline strictly before ``until``."""
        o = self.out
        while o.status == "open":
            candidates = []
            if o.first_response_due is not None and not o.first_response_overdue:
                candidates.append((o.first_response_due, 0, "first_response_overdue"))
            if o.resolution_due is not None and not o.resolution_overdue:
                candidates.append((o.resolution_due, 1, "resolution_overdue"))
            if not candidates:
                return
            due, _, reason = min(candidates)
            if not due < until:
                return
            if not self._escalate(reason, due, due):
                if reason == "first_response_overdue":
                    o.first_response_overdue = True
                else:
                    o.resolution_overdue = True

    def apply(self, at: datetime, event: Event) -> None:
        self.run_clock(at)
        if event.key in self.seen:
            return
        self.seen.add(event.key)
        o = self.out
        if isinstance(event, Create):
            if self.created:
                return
            self.created = True
            self.kind = event.kind
            self._arrive(event.unit, at)
            return
        if not self.created:
            return
        if isinstance(event, Vote):
            before = self.stances.pop(event.voter, None)
            if event.stance is not None:
                self.stances[event.voter] = event.stance
            if before != event.stance:
                if event.stance == "support":
                    o.followers.add(event.voter)
                else:
                    o.followers.discard(event.voter)
                o.support = sum(1 for s in self.stances.values() if s == "support")
                o.oppose = sum(1 for s in self.stances.values() if s == "oppose")
        elif isinstance(event, Follow):
            if event.on:
                o.followers.add(event.person)
            else:
                o.followers.discard(event.person)
        elif isinstance(event, Respond):
            if o.status != "open" or event.unit != o.unit:
                return
            o.first_response_due = None
            if event.kind == "referral" and event.referred_to and event.referred_to != o.unit:
                self._arrive(event.referred_to, at)
            elif event.kind in CLOSING:
                o.status = "closed"
                o.resolution_due = None
        elif isinstance(event, Withdraw) and o.status == "open":
            o.status = "withdrawn"
            o.first_response_due = o.resolution_due = None
        self._ladder(at)


def replay(model: Model, history: Sequence[tuple[datetime, Event]], clock: datetime) -> Outcome:
    """The outcome of one submission's history (in order of effective instant) at ``clock``."""
    sub = Submission(model)
    for at, event in history:
        sub.apply(at, event)
    sub.run_clock(clock)
    return sub.out

"""The organisation's configuration: calendar, support ladder, SLA hours, integrators, units.

Read from a TOML file (``--config`` / ``SADA_CONFIG``); every key is optional
and defaults follow the domain rules. Validation is strict: an unknown key or
a bad value raises :class:`~sada.pipeline.domain.errors.ConfigError` naming the key.
Without a file, the shipped demo university (``default_config.toml``) is used.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, time
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jdatetime

from sada.pipeline.domain.errors import ConfigError
from sada.pipeline.domain.vocabulary import SUBMISSION_KINDS
from sada.pipeline.domain.webhooks import Webhook, webhooks

KINDS = SUBMISSION_KINDS  # the kinds an SLA is configured for, as the schemas name them
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = date.weekday()
_UNIT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class SlaHours:
    first_response_hours: float
    resolution_hours: float


DEFAULT_SLA: Mapping[str, SlaHours] = {
    "complaint": SlaHours(16, 80),
    "criticism": SlaHours(24, 80),
    "question": SlaHours(16, 40),
    "suggestion": SlaHours(40, 160),
}


@dataclass(frozen=True)
class CalendarConfig:
    timezone: str = "Asia/Tehran"
    workdays: tuple[int, ...] = (5, 6, 0, 1, 2)  # sat, sun, mon, tue, wed as date.weekday()
    opens: time = time(8, 0)
    closes: time = time(16, 0)
    holidays: tuple[date, ...] = ()


@dataclass(frozen=True)
class Integrator:
    id: str
    key_sha256: str
    sources: tuple[str, ...]
    types: tuple[str, ...]
    rate_per_second: float = 200.0


@dataclass(frozen=True)
class Unit:
    id: str
    name: str
    parent: str | None = None
    monitoring: bool = False  # told of everything overdue


@dataclass(frozen=True)
class Config:
    calendar: CalendarConfig = field(default_factory=CalendarConfig)
    ladder: tuple[int, ...] = (50, 200, 1000)
    sla: Mapping[str, SlaHours] = field(default_factory=lambda: dict(DEFAULT_SLA))
    integrators: tuple[Integrator, ...] = ()
    units: Mapping[str, Unit] = field(default_factory=dict)
    webhooks: tuple[Webhook, ...] = ()

    def parent_of(self, unit_id: str) -> str | None:
        unit = self.units.get(unit_id)
        return unit.parent if unit else None

    @property
    def monitoring_unit(self) -> str | None:
        """The unit marked ``monitoring = true``; without one, the first root unit."""
        marked = [u.id for u in self.units.values() if u.monitoring]
        if marked:
            return marked[0]
        return next((u.id for u in self.units.values() if u.parent is None), None)


def load_config(path: Path | None = None) -> Config:
    """Load and validate a config file; ``None`` loads the shipped demo university."""
    if path is None:
        text = resources.files("sada").joinpath("default_config.toml").read_text("utf-8")
        where = "default_config.toml"
    else:
        try:
            text = Path(path).read_text("utf-8")
        except OSError as e:
            raise ConfigError("<file>", f"cannot read {path}: {e.strerror}") from e
        where = str(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("<file>", f"{where} is not valid TOML: {e}") from e
    return parse_config(raw)


def parse_config(raw: Mapping[str, Any]) -> Config:
    _only(raw, "", {"calendar", "ladder", "sla", "integrators", "units", "webhooks"})
    units = _units(raw.get("units", []))
    return Config(
        calendar=_calendar(raw.get("calendar", {})),
        ladder=_ladder(raw.get("ladder", {})),
        sla=_sla(raw.get("sla", {})),
        integrators=_integrators(raw.get("integrators", [])),
        units=units,
        webhooks=webhooks(raw.get("webhooks", []), units),
    )


def parse_date(text: str, key: str = "date") -> date:
    """A Gregorian (``2026-11-25``) or Jalali (``1405-01-01``, year < 1700) date."""
    m = re.fullmatch(r"(\d{4})-(\d{1,2})-(\d{1,2})", text.strip())
    if not m:
        raise ConfigError(key, f"{text!r} is not a YYYY-MM-DD date")
    y, mo, d = (int(g) for g in m.groups())
    try:
        if y < 1700:
            return jdatetime.date(y, mo, d).togregorian()  # type: ignore[no-any-return]
        return date(y, mo, d)
    except ValueError as e:
        raise ConfigError(key, f"{text!r} is not a valid date: {e}") from e


def _only(table: Mapping[str, Any], prefix: str, allowed: set[str]) -> None:
    if not isinstance(table, Mapping):
        raise ConfigError(prefix or "<root>", "must be a table")
    for key in table:
        if key not in allowed:
            name = f"{prefix}.{key}" if prefix else key
            raise ConfigError(name, f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _calendar(raw: Mapping[str, Any]) -> CalendarConfig:
    _only(raw, "calendar", {"timezone", "workdays", "hours", "holidays"})
    d = CalendarConfig()
    tz = raw.get("timezone", d.timezone)
    try:
        ZoneInfo(str(tz))
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ConfigError("calendar.timezone", f"unknown time zone {tz!r}") from e
    workdays = d.workdays
    if "workdays" in raw:
        days = raw["workdays"]
        if not isinstance(days, list) or not days:
            raise ConfigError("calendar.workdays", "must be a non-empty list of day names")
        try:
            workdays = tuple(WEEKDAYS.index(str(x).lower()[:3]) for x in days)
        except ValueError as e:
            raise ConfigError("calendar.workdays", f"day names are {', '.join(WEEKDAYS)}") from e
    opens, closes = d.opens, d.closes
    if "hours" in raw:
        hours = raw["hours"]
        if not (isinstance(hours, list) and len(hours) == 2):
            raise ConfigError("calendar.hours", 'must be ["HH:MM", "HH:MM"]')
        opens, closes = (_time(str(h)) for h in hours)
        if not opens < closes:
            raise ConfigError("calendar.hours", "opening must be before closing")
    holidays = raw.get("holidays", [])
    if not isinstance(holidays, list):
        raise ConfigError("calendar.holidays", "must be a list of dates")
    return CalendarConfig(
        timezone=str(tz),
        workdays=workdays,
        opens=opens,
        closes=closes,
        holidays=tuple(sorted({parse_date(str(h), "calendar.holidays") for h in holidays})),
    )


def _time(text: str) -> time:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ConfigError("calendar.hours", f"{text!r} is not HH:MM")
    return time(int(m.group(1)), int(m.group(2)))


def _ladder(raw: Mapping[str, Any]) -> tuple[int, ...]:
    _only(raw, "ladder", {"support"})
    steps = raw.get("support", [50, 200, 1000])
    if not isinstance(steps, list) or not all(isinstance(s, int) and s > 0 for s in steps):
        raise ConfigError("ladder.support", "must be a list of positive integers")
    if list(steps) != sorted(set(steps)):
        raise ConfigError("ladder.support", "thresholds must be strictly increasing")
    return tuple(steps)


def _sla(raw: Mapping[str, Any]) -> dict[str, SlaHours]:
    _only(raw, "sla", set(KINDS))
    out = dict(DEFAULT_SLA)
    for kind, table in raw.items():
        _only(table, f"sla.{kind}", {"first_response_hours", "resolution_hours"})
        cur = out[kind]
        vals = []
        for name in ("first_response_hours", "resolution_hours"):
            v = table.get(name, getattr(cur, name))
            if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
                raise ConfigError(f"sla.{kind}.{name}", "must be a positive number of hours")
            vals.append(float(v))
        out[kind] = SlaHours(vals[0], vals[1])
    return out


def _integrators(raw: Any) -> tuple[Integrator, ...]:
    if not isinstance(raw, list):
        raise ConfigError("integrators", "must be an array of tables ([[integrators]])")
    out: list[Integrator] = []
    seen: set[str] = set()
    for i, t in enumerate(raw):
        key = f"integrators[{i}]"
        _only(t, key, {"id", "key_sha256", "sources", "types", "rate_per_second"})
        iid = t.get("id")
        if not isinstance(iid, str) or not iid:
            raise ConfigError(f"{key}.id", "required, a non-empty string")
        if iid in seen:
            raise ConfigError(f"{key}.id", f"duplicate integrator id {iid!r}")
        seen.add(iid)
        digest = str(t.get("key_sha256", "")).lower()
        if not _HEX64.match(digest):
            raise ConfigError(f"{key}.key_sha256", "must be the hex SHA-256 of the bearer key")
        sources, types = t.get("sources", []), t.get("types", [])
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise ConfigError(f"{key}.sources", "must be a list of source prefixes")
        if not isinstance(types, list) or not all(isinstance(s, str) for s in types):
            raise ConfigError(f"{key}.types", "must be a list of event types")
        rate = t.get("rate_per_second", 200.0)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0:
            raise ConfigError(f"{key}.rate_per_second", "must be a positive number")
        out.append(Integrator(iid, digest, tuple(sources), tuple(types), float(rate)))
    return tuple(out)


def _units(raw: Any) -> dict[str, Unit]:
    if not isinstance(raw, list):
        raise ConfigError("units", "must be an array of tables ([[units]])")
    units: dict[str, Unit] = {}
    for i, t in enumerate(raw):
        key = f"units[{i}]"
        _only(t, key, {"id", "name", "parent", "monitoring"})
        uid = t.get("id")
        if not isinstance(uid, str) or not _UNIT_ID.match(uid):
            raise ConfigError(f"{key}.id", "required: letters, digits, '.', '_' or '-'")
        if uid in units:
            raise ConfigError(f"{key}.id", f"duplicate unit id {uid!r}")
        name = t.get("name", uid)
        parent = t.get("parent")
        if not isinstance(name, str) or (parent is not None and not isinstance(parent, str)):
            raise ConfigError(key, "name and parent must be strings")
        monitoring = t.get("monitoring", False)
        if not isinstance(monitoring, bool):
            raise ConfigError(f"{key}.monitoring", "must be true or false")
        if monitoring and any(u.monitoring for u in units.values()):
            raise ConfigError(f"{key}.monitoring", "only one unit may be the monitoring unit")
        units[uid] = Unit(uid, name, parent, monitoring)
    for i, u in enumerate(units.values()):
        if u.parent is not None and u.parent not in units:
            raise ConfigError(f"units[{i}].parent", f"unknown parent unit {u.parent!r}")
    for i, u in enumerate(units.values()):
        seen, cur = {u.id}, u.parent
        while cur is not None:
            if cur in seen:
                raise ConfigError(f"units[{i}].parent", f"cycle through unit {cur!r}")
            seen.add(cur)
            cur = units[cur].parent
    return units

"""The simulated organisation: its rules, calendar, units and texts, and the small draws on them.

Shared by the history (:mod:`.history`) and the live demo (:mod:`.live`): both
build submissions in one :class:`World`, so tracking codes never repeat
between the backfill and the live part.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sada.pipeline.domain.calendar import BusinessCalendar
from sada.pipeline.domain.config import Config, Unit
from sada.pipeline.domain.errors import SadaError
from sada.pipeline.domain.rules import Rules
from sada.pipeline.domain.tracking import new_tracking_code
from sada.producers.texts import TextBank, text_bank

DEFAULT_SOURCE_PREFIX = "/integrations/simulator"
PEOPLE = 200_000  # pseudonymous people that author and vote


@dataclass
class World:
    """What every simulated submission draws on; tracking codes are unique across it."""

    config: Config
    rules: Rules
    calendar: BusinessCalendar
    zone: ZoneInfo
    texts: TextBank
    source_prefix: str
    end: datetime
    units: tuple[str, ...]
    unit_weights: tuple[float, ...]
    used_codes: set[str] = field(default_factory=set)

    @classmethod
    def build(cls, config: Config, end: datetime, source_prefix: str) -> World:
        if not config.units:
            raise SadaError("the configuration has no units to address submissions to")
        calendar = BusinessCalendar(config.calendar)
        units = tuple(config.units)
        return cls(
            config=config,
            rules=Rules.from_config(config, calendar),
            calendar=calendar,
            zone=ZoneInfo(config.calendar.timezone),
            texts=text_bank(),
            source_prefix=source_prefix.rstrip("/") or DEFAULT_SOURCE_PREFIX,
            end=end,
            units=units,
            unit_weights=tuple(_unit_weight(config.units, u) for u in units),
        )

    def source(self, what: str) -> str:
        return f"{self.source_prefix}/{what}"

    def pick_unit(self, rng: random.Random, *, other_than: str | None = None) -> str:
        while True:
            unit = rng.choices(self.units, self.unit_weights)[0]
            if unit != other_than or len(self.units) == 1:
                return unit

    def unit_name(self, unit_id: str) -> str:
        unit = self.config.units.get(unit_id)
        return unit.name if unit else unit_id

    def new_code(self, rng: random.Random) -> str:
        while True:
            code = new_tracking_code(rng)
            if code not in self.used_codes:
                self.used_codes.add(code)
                return code


def _unit_weight(units: Mapping[str, Unit], unit_id: str) -> float:
    """Leaves (departments, wards, offices) hear most; the top of the tree least."""
    if units[unit_id].parent is None:
        return 0.5
    has_children = any(u.parent == unit_id for u in units.values())
    return 2.0 if has_children else 6.0


def weighted(rng: random.Random, table: Sequence[tuple[str, int]]) -> str:
    return rng.choices([k for k, _ in table], [w for _, w in table])[0]


def person(n: int) -> str:
    return f"p{n:06d}"


def new_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def hours(h: float) -> timedelta:
    # Whole milliseconds: realistic stamps, and exact in any replay.
    return timedelta(milliseconds=round(h * 3_600_000))

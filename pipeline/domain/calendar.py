"""Business time of the organisation's calendar: SLA deadlines and elapsed working hours.

Working time is every configured workday that is not a holiday, from ``opens``
to ``closes`` local time in the calendar's time zone. Elapsed working time is
real elapsed time inside those periods, so on a day whose working hours span a
DST change a working period is an hour shorter or longer than its wall-clock
span. Local times that a DST change skips or repeats are read as PEP 495
``fold=0`` does: a skipped time with the offset before the change, a repeated
time at its first occurrence.

All arithmetic is in integer microseconds since the Unix epoch, so results are
exact and deterministic; fractional hours are rounded to the nearest
microsecond. Days are precomputed in blocks (each day's opening and closing
instant and a running sum of working time), so a deadline weeks away is found
by skipping whole blocks and bisecting inside the last one, not by walking
hour by hour.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jdatetime

from sada.pipeline.domain.config import CalendarConfig
from sada.pipeline.domain.errors import ConfigError

__all__ = ["BusinessCalendar", "to_jalali"]

US_PER_HOUR = 3_600_000_000
_ONE_US = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BLOCK_DAYS = 128
# Bounds memory when a long replay touches many years; a block is ~15 kB.
_MAX_CACHED_BLOCKS = 512
# The first and last block lie wholly inside the dates datetime can represent,
# with a day's margin so local-to-UTC conversion cannot overflow.
_FIRST_BLOCK = date.min.toordinal() // _BLOCK_DAYS + 1
_LAST_BLOCK = date.max.toordinal() // _BLOCK_DAYS - 1


@dataclass(frozen=True)
class _Block:
    """``_BLOCK_DAYS`` consecutive local dates, from ordinal ``number * _BLOCK_DAYS``.

    ``opens[i]``/``closes[i]`` are the UTC microseconds of day ``i``'s working
    period (equal on a day off); ``cum[i]`` is the working time of days
    ``0 .. i-1``, so ``cum[-1]`` is the block's total.
    """

    number: int
    opens: tuple[int, ...]
    closes: tuple[int, ...]
    cum: tuple[int, ...]

    @property
    def total(self) -> int:
        return self.cum[-1]

    def elapsed_before(self, day: int, us: int) -> int:
        """Working microseconds in this block before instant ``us``, which falls on ``day``."""
        opens, closes = self.opens[day], self.closes[day]
        return self.cum[day] + min(max(us - opens, 0), closes - opens)

    def instant_at(self, elapsed: int) -> int:
        """The earliest instant by which ``elapsed`` (0 < elapsed <= total) has been worked."""
        # cum[day] < elapsed <= cum[day + 1]: a deadline landing exactly on a
        # day's total is that day's closing instant, not the next opening.
        day = bisect_left(self.cum, elapsed) - 1
        return self.opens[day] + (elapsed - self.cum[day])


class BusinessCalendar:
    """Working-time arithmetic over one :class:`~sada.pipeline.domain.config.CalendarConfig`.

    Every method takes timezone-aware datetimes (a naive one raises
    :class:`ValueError`) and returns aware datetimes in UTC.
    """

    def __init__(self, cfg: CalendarConfig) -> None:
        try:
            self._zone = ZoneInfo(cfg.timezone)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ConfigError("calendar.timezone", f"unknown time zone {cfg.timezone!r}") from e
        if not cfg.workdays or not all(0 <= d <= 6 for d in cfg.workdays):
            raise ConfigError("calendar.workdays", "must be weekdays 0 (Monday) to 6 (Sunday)")
        if not cfg.opens < cfg.closes:
            raise ConfigError("calendar.hours", "opening must be before closing")
        self.config = cfg
        self._workdays = frozenset(cfg.workdays)
        self._holidays = frozenset(cfg.holidays)
        self._blocks: dict[int, _Block] = {}

    @classmethod
    def default(cls) -> BusinessCalendar:
        """The domain's default calendar: Tehran, Saturday–Wednesday 08:00–16:00, no holidays."""
        return cls(CalendarConfig())

    def add_business_hours(self, t: datetime, hours: float) -> datetime:
        """The instant at which ``hours`` working hours have elapsed after ``t``.

        Time before opening counts from opening, time after closing from the
        next opening; a span that ends exactly at closing time ends at the
        closing instant. Zero hours returns ``t`` itself (in UTC), whether or
        not ``t`` is working time: nothing has to elapse. Negative or
        non-finite hours raise :class:`ValueError`.
        """
        start = _to_us(t)
        need = _hours_to_us(hours)
        if need == 0:
            return _from_us(start)
        block, day = self._locate(t)
        done = block.elapsed_before(day, start)
        if need <= block.total - done:
            return _from_us(block.instant_at(done + need))
        need -= block.total - done
        number = block.number + 1
        while True:
            block = self._block(number)
            if need <= block.total:
                return _from_us(block.instant_at(need))
            need -= block.total
            number += 1

    def business_hours_between(self, a: datetime, b: datetime) -> float:
        """Working hours elapsed in ``[a, b)``; 0 when ``b <= a``."""
        ua, ub = _to_us(a), _to_us(b)
        if ub <= ua:
            return 0.0
        block_a, day_a = self._locate(a)
        block_b, day_b = self._locate(b)
        done_a = block_a.elapsed_before(day_a, ua)
        done_b = block_b.elapsed_before(day_b, ub)
        if block_a.number == block_b.number:
            return (done_b - done_a) / US_PER_HOUR
        between = sum(self._block(n).total for n in range(block_a.number + 1, block_b.number))
        return (block_a.total - done_a + between + done_b) / US_PER_HOUR

    def is_working_instant(self, t: datetime) -> bool:
        """Whether ``t`` lies in a working period (opening included, closing excluded)."""
        us = _to_us(t)
        block, day = self._locate(t)
        return block.opens[day] <= us < block.closes[day]

    def next_opening(self, t: datetime) -> datetime:
        """The first opening instant at or after ``t``.

        During working hours that is the next working day's opening; exactly
        at an opening it is ``t`` itself.
        """
        us = _to_us(t)
        block, day = self._locate(t)
        while True:
            for i in range(day, _BLOCK_DAYS):
                if block.opens[i] < block.closes[i] and block.opens[i] >= us:
                    return _from_us(block.opens[i])
            block, day = self._block(block.number + 1), 0

    def _locate(self, t: datetime) -> tuple[_Block, int]:
        """The block holding ``t``'s local date, and the day's index in it."""
        try:
            ordinal = t.astimezone(self._zone).date().toordinal()
        except OverflowError as e:
            raise ValueError(f"{t!r} is outside the supported range of dates") from e
        number, day = divmod(ordinal, _BLOCK_DAYS)
        return self._block(number), day

    def _block(self, number: int) -> _Block:
        block = self._blocks.get(number)
        if block is None:
            block = self._build(number)
            if len(self._blocks) >= _MAX_CACHED_BLOCKS:
                # Dicts keep insertion order: drop the block built longest ago.
                del self._blocks[next(iter(self._blocks))]
            self._blocks[number] = block
        return block

    def _build(self, number: int) -> _Block:
        if not _FIRST_BLOCK <= number <= _LAST_BLOCK:
            raise ValueError("outside the supported range of dates")
        cfg = self.config
        opens: list[int] = []
        closes: list[int] = []
        cum = [0]
        for ordinal in range(number * _BLOCK_DAYS, (number + 1) * _BLOCK_DAYS):
            d = date.fromordinal(ordinal)
            if d.weekday() in self._workdays and d not in self._holidays:
                o = _to_us(datetime.combine(d, cfg.opens, tzinfo=self._zone))
                c = max(o, _to_us(datetime.combine(d, cfg.closes, tzinfo=self._zone)))
            else:
                o = c = _to_us(datetime.combine(d, cfg.opens, tzinfo=self._zone))
            opens.append(o)
            closes.append(c)
            cum.append(cum[-1] + c - o)
        return _Block(number, tuple(opens), tuple(closes), tuple(cum))


def to_jalali(dt: datetime, tz: str = "Asia/Tehran") -> str:
    """``dt`` as local time in ``tz`` on the Jalali calendar, e.g. ``1405/09/01 14:30``."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"naive datetime {dt!r}: a time zone is required")
    local = dt.astimezone(ZoneInfo(tz))
    return str(jdatetime.datetime.fromgregorian(datetime=local).strftime("%Y/%m/%d %H:%M"))


def _to_us(t: datetime) -> int:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"naive datetime {t!r}: a time zone is required")
    return (t - _EPOCH) // _ONE_US


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _hours_to_us(hours: float) -> int:
    if not math.isfinite(hours) or hours < 0:
        raise ValueError(f"business hours must be a finite number >= 0, not {hours!r}")
    return round(hours * US_PER_HOUR)

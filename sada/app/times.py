"""Times for people: one parser for every time option, one spelling for every human output.

Options (``--as-of``, ``dlq --since/--until``) take an RFC 3339 instant with
offset (``2026-11-29T10:00:00+03:30``), a Gregorian date (``2026-11-29``) or
a Jalali date (``1405-09-08``, ``1405/09/08``, in Persian digits too); a date
means its first instant, 00:00 in the calendar's time zone. Human output shows
the calendar's local time twice, labelled, to the second: Jalali and ISO with
its offset, e.g. ``1405/09/02 14:04:32 (2026-11-23T14:04:32+03:30 Asia/Tehran)``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from datetime import time as clock_time
from zoneinfo import ZoneInfo

import jdatetime

from sada.pipeline.domain.config import parse_date
from sada.pipeline.domain.errors import ConfigError, SadaError
from sada.pipeline.domain.model import parse_time

_DIGITS = str.maketrans("۰۱۲۳۴۵۶۷۸۹٠١٢٣٤٥٦٧٨٩", "01234567890123456789")
_DATE = re.compile(r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})")


def parse_when(text: str, option: str, timezone: str) -> datetime:
    """An instant (UTC) from an RFC 3339 instant, a Gregorian date or a Jalali date."""
    plain = text.strip().translate(_DIGITS)
    m = _DATE.fullmatch(plain)
    if m:
        try:
            day = parse_date("-".join(m.groups()), option)
        except ConfigError as e:
            raise SadaError(f"{option}: {text!r} is not a valid date") from e
        return datetime.combine(day, clock_time(0), tzinfo=ZoneInfo(timezone)).astimezone(UTC)
    try:
        return parse_time(plain)
    except ValueError:
        raise SadaError(
            f"{option}: {text!r} is neither an RFC 3339 instant with offset "
            "(2026-11-29T10:00:00+03:30) nor a date (2026-11-29, or Jalali 1405-09-08)"
        ) from None


def show_time(value: datetime | str | None, timezone: str) -> str:
    """``value`` in the calendar's zone: Jalali and ISO with offset, to the second, labelled."""
    if value is None or value == "":
        return "—"
    dt = parse_time(value) if isinstance(value, str) else value
    local = dt.astimezone(ZoneInfo(timezone)).replace(microsecond=0)
    jalali = jdatetime.datetime.fromgregorian(datetime=local).strftime("%Y/%m/%d %H:%M:%S")
    return f"{jalali!s} ({local.isoformat()} {timezone})"

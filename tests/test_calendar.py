"""Business-time calendar: SLA deadlines across weekends, holidays, boundaries and DST.

Expected instants are worked out by hand in each test from the calendar rules
(Tehran is UTC+03:30 all year since 2022; Berlin is UTC+01:00 in winter and
UTC+02:00 in summer).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sada.pipeline.domain.calendar import BusinessCalendar, to_jalali
from sada.pipeline.domain.config import CalendarConfig, parse_config

TEHRAN = ZoneInfo("Asia/Tehran")
BERLIN = ZoneInfo("Europe/Berlin")
US_PER_HOUR = 3_600_000_000


def tehran(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=TEHRAN)


def berlin(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=BERLIN)


def berlin_office() -> CalendarConfig:
    return parse_config(
        {
            "calendar": {
                "timezone": "Europe/Berlin",
                "workdays": ["mon", "tue", "wed", "thu", "fri"],
                "hours": ["09:00", "17:00"],
            }
        }
    ).calendar


# November 2026: Wed 18, Thu 19, Fri 20, Sat 21, Sun 22, Mon 23, Tue 24, Wed 25, ...
# (2026-01-01 is a Thursday; 21 November is day 325, 324 = 46 weeks + 2 days
# after a Thursday, so a Saturday.)
CAL = BusinessCalendar.default()


def test_deadline_crosses_thursday_friday_weekend() -> None:
    # Wednesday 14:00 + 4h: 2h until Wednesday's 16:00 closing, Thursday and
    # Friday are off, then 2h from Saturday's 08:00 opening.
    start = tehran(2026, 11, 18, 14, 0)
    deadline = CAL.add_business_hours(start, 4)
    assert deadline == tehran(2026, 11, 21, 10, 0)
    assert deadline.tzinfo is UTC
    assert CAL.business_hours_between(start, deadline) == 4.0


def test_deadline_crosses_jalali_holiday() -> None:
    # 1405-01-01 is Nowruz, 21 March 2026. 1405-09-04 is 6*31 + 2*30 + 3 = 249
    # days later; 21 March + 249 days = 25 November 2026, a Wednesday.
    cfg = parse_config({"calendar": {"holidays": ["1405-09-04"]}}).calendar
    assert cfg.holidays == (date(2026, 11, 25),)
    cal = BusinessCalendar(cfg)

    # Tuesday 12:00 + 8h: 4h until Tuesday's closing, Wednesday the holiday,
    # Thursday and Friday the weekend, then 4h on Saturday from 08:00.
    start = tehran(2026, 11, 24, 12, 0)
    assert cal.add_business_hours(start, 8) == tehran(2026, 11, 28, 12, 0)
    # Without the holiday the same deadline falls on Wednesday at noon.
    assert CAL.add_business_hours(start, 8) == tehran(2026, 11, 25, 12, 0)
    assert not cal.is_working_instant(tehran(2026, 11, 25, 10, 0))
    assert cal.business_hours_between(start, tehran(2026, 11, 28, 8, 0)) == 4.0


def test_friday_night_submission_with_sixteen_hours() -> None:
    # Friday 23:00 is after hours on a day off: the clock starts Saturday 08:00.
    # Saturday 08:00-16:00 is 8h, Sunday 08:00-16:00 the other 8h, and a span
    # ending exactly at closing ends at the closing instant: Sunday 16:00
    # Tehran, which is 12:30 UTC.
    start = tehran(2026, 11, 20, 23, 0)
    deadline = CAL.add_business_hours(start, 16)
    assert deadline == datetime(2026, 11, 22, 12, 30, tzinfo=UTC)
    assert deadline.tzinfo is UTC
    assert CAL.business_hours_between(start, deadline) == 16.0
    assert CAL.next_opening(start) == tehran(2026, 11, 21, 8, 0)


def test_exactly_at_opening() -> None:
    opening = tehran(2026, 11, 22, 8, 0)
    assert CAL.is_working_instant(opening)
    assert CAL.next_opening(opening) == opening
    # A full working day from opening ends at that day's closing.
    assert CAL.add_business_hours(opening, 8) == tehran(2026, 11, 22, 16, 0)


def test_exactly_at_closing() -> None:
    closing = tehran(2026, 11, 22, 16, 0)
    assert not CAL.is_working_instant(closing)
    # Nothing is left of Sunday: one hour is Monday 08:00-09:00.
    assert CAL.add_business_hours(closing, 1) == tehran(2026, 11, 23, 9, 0)
    assert CAL.next_opening(closing) == tehran(2026, 11, 23, 8, 0)
    # Zero hours is the instant itself, even outside working time.
    assert CAL.add_business_hours(closing, 0) == closing
    assert CAL.add_business_hours(tehran(2026, 11, 20, 23, 0), 0) == tehran(2026, 11, 20, 23, 0)


def test_one_microsecond_before_closing() -> None:
    t = tehran(2026, 11, 22, 15, 59, 59, 999_999)
    assert CAL.is_working_instant(t)
    # 1 µs is spent on Sunday; the other 1h - 1µs from Monday's opening.
    assert CAL.add_business_hours(t, 1) == tehran(2026, 11, 23, 8, 59, 59, 999_999)
    # Exactly the remaining microsecond ends at the closing instant.
    assert CAL.add_business_hours(t, 1 / US_PER_HOUR) == tehran(2026, 11, 22, 16, 0)
    assert CAL.business_hours_between(t, tehran(2026, 11, 23, 9)) == 1 + 1 / US_PER_HOUR


def test_before_opening_on_a_workday() -> None:
    # Time before opening counts from opening: 06:00 + 2h is 10:00.
    early = tehran(2026, 11, 22, 6, 0)
    assert not CAL.is_working_instant(early)
    assert CAL.add_business_hours(early, 2) == tehran(2026, 11, 22, 10, 0)
    assert CAL.next_opening(early) == tehran(2026, 11, 22, 8, 0)
    assert CAL.business_hours_between(early, tehran(2026, 11, 22, 8, 0)) == 0.0


def test_next_opening_during_working_hours_is_the_next_working_day() -> None:
    # Wednesday's next opening is Saturday's, past the weekend.
    assert CAL.next_opening(tehran(2026, 11, 18, 12, 0)) == tehran(2026, 11, 21, 8, 0)


def test_fractional_hours() -> None:
    # 1.5h from Sunday 15:00: 1h until closing, 0.5h from Monday 08:00.
    assert CAL.add_business_hours(tehran(2026, 11, 22, 15), 1.5) == tehran(2026, 11, 23, 8, 30)


def test_long_deadlines_skip_whole_weeks() -> None:
    # A working week is 5 days * 8h = 40h. 160h from Saturday 08:00 is four
    # full weeks, ending at the closing of the fourth Wednesday: 21 November
    # + 3 weeks + 4 days = 16 December.
    start = tehran(2026, 11, 21, 8, 0)
    assert CAL.add_business_hours(start, 160) == tehran(2026, 12, 16, 16, 0)
    # 10,000h is 250 such weeks: the Wednesday three days before the Saturday
    # 250 weeks on.
    end_day = date(2026, 11, 21) + timedelta(weeks=250) - timedelta(days=3)
    expected = datetime.combine(end_day, datetime.min.time(), TEHRAN).replace(hour=16)
    assert CAL.add_business_hours(start, 10_000) == expected
    assert CAL.business_hours_between(start, expected) == 10_000.0


def test_between_is_zero_when_the_end_is_not_after_the_start() -> None:
    a = tehran(2026, 11, 22, 10, 0)
    assert CAL.business_hours_between(a, a) == 0.0
    assert CAL.business_hours_between(a, tehran(2026, 11, 22, 9, 0)) == 0.0


def test_rejects_naive_datetimes_and_bad_hours() -> None:
    naive = datetime(2026, 11, 22, 10, 0)
    with pytest.raises(ValueError):
        CAL.add_business_hours(naive, 1)
    with pytest.raises(ValueError):
        CAL.business_hours_between(naive, tehran(2026, 11, 22, 12))
    with pytest.raises(ValueError):
        CAL.is_working_instant(naive)
    with pytest.raises(ValueError):
        CAL.next_opening(naive)
    with pytest.raises(ValueError):
        to_jalali(naive)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            CAL.add_business_hours(tehran(2026, 11, 22, 10), bad)


def test_berlin_weekday_office_across_spring_dst_change() -> None:
    cal = BusinessCalendar(berlin_office())
    # Clocks go forward on Sunday 29 March 2026. Friday 16:00 CET (15:00 UTC)
    # + 2h: 1h until 17:00, then Monday 09:00-10:00 CEST, i.e. 08:00 UTC.
    friday = berlin(2026, 3, 27, 16, 0)
    assert friday == datetime(2026, 3, 27, 15, 0, tzinfo=UTC)
    assert cal.add_business_hours(friday, 2) == datetime(2026, 3, 30, 8, 0, tzinfo=UTC)
    # A full week from Monday 09:00 CET to Monday 09:00 CEST is 5 * 8h,
    # though only 167 real hours pass.
    assert cal.business_hours_between(berlin(2026, 3, 23, 9), berlin(2026, 3, 30, 9)) == 40.0


def test_berlin_weekday_office_across_autumn_dst_change() -> None:
    cal = BusinessCalendar(berlin_office())
    # Clocks go back on Sunday 25 October 2026. Friday 16:00 CEST (14:00 UTC)
    # + 2h: 1h until 17:00, then Monday 09:00-10:00 CET, i.e. 09:00 UTC.
    friday = berlin(2026, 10, 23, 16, 0)
    assert cal.add_business_hours(friday, 2) == datetime(2026, 10, 26, 9, 0, tzinfo=UTC)
    assert cal.next_opening(friday) == datetime(2026, 10, 26, 8, 0, tzinfo=UTC)


def test_working_hours_spanning_a_dst_change_count_real_time() -> None:
    cal = BusinessCalendar(
        parse_config(
            {
                "calendar": {
                    "timezone": "Europe/Berlin",
                    "workdays": ["sun"],
                    "hours": ["01:00", "05:00"],
                }
            }
        ).calendar
    )
    # Sunday 29 March 2026: 01:00 CET is 00:00 UTC, 05:00 CEST is 03:00 UTC,
    # so that day's 4 wall-clock hours hold 3 real working hours.
    assert cal.business_hours_between(berlin(2026, 3, 28, 12), berlin(2026, 3, 30)) == 3.0
    saturday = berlin(2026, 3, 28, 12, 0)
    assert cal.add_business_hours(saturday, 3) == datetime(2026, 3, 29, 3, 0, tzinfo=UTC)
    # The fourth hour is the next Sunday's first: 01:00-02:00 CEST, 23:00-00:00 UTC.
    assert cal.add_business_hours(saturday, 4) == datetime(2026, 4, 5, 0, 0, tzinfo=UTC)
    # Sunday 25 October 2026: 01:00 CEST is 23:00 UTC the day before, 05:00
    # CET is 04:00 UTC: 5 real working hours.
    assert cal.business_hours_between(berlin(2026, 10, 24, 12), berlin(2026, 10, 26)) == 5.0


def test_to_jalali() -> None:
    # 1405-09-04 is 25 November 2026 (see the holiday test), so 1405-09-01 is
    # 22 November. 11:00 UTC is 14:30 in Tehran.
    instant = datetime(2026, 11, 22, 11, 0, tzinfo=UTC)
    assert to_jalali(instant) == "1405/09/01 14:30"
    assert to_jalali(instant, "UTC") == "1405/09/01 11:00"
    # Late evening UTC is already the next day in Tehran.
    assert to_jalali(datetime(2026, 11, 22, 21, 0, tzinfo=UTC)) == "1405/09/02 00:30"


CALENDARS = [BusinessCalendar.default(), BusinessCalendar(berlin_office())]
instants = st.datetimes(
    min_value=datetime(2020, 1, 1),
    max_value=datetime(2035, 12, 31),
    timezones=st.sampled_from([UTC, TEHRAN, BERLIN, ZoneInfo("America/New_York")]),
)
microseconds = st.integers(min_value=0, max_value=400 * US_PER_HOUR)


@settings(max_examples=300, deadline=None)
@given(cal=st.sampled_from(CALENDARS), t=instants, us=microseconds)
def test_between_inverts_add(cal: BusinessCalendar, t: datetime, us: int) -> None:
    hours = us / US_PER_HOUR
    deadline = cal.add_business_hours(t, hours)
    assert deadline >= t
    assert cal.business_hours_between(t, deadline) == hours


@settings(max_examples=300, deadline=None)
@given(cal=st.sampled_from(CALENDARS), a=instants, b=instants, us=microseconds)
def test_add_is_monotonic_in_start(
    cal: BusinessCalendar, a: datetime, b: datetime, us: int
) -> None:
    early, late = sorted((a, b))
    hours = us / US_PER_HOUR
    assert cal.add_business_hours(early, hours) <= cal.add_business_hours(late, hours)


@settings(max_examples=300, deadline=None)
@given(cal=st.sampled_from(CALENDARS), a=instants, b=instants, c=instants)
def test_between_adds_up(cal: BusinessCalendar, a: datetime, b: datetime, c: datetime) -> None:
    x, y, z = sorted((a, b, c))
    whole = cal.business_hours_between(x, z)
    parts = cal.business_hours_between(x, y) + cal.business_hours_between(y, z)
    assert round(whole * US_PER_HOUR) == round(parts * US_PER_HOUR)
    # Elapsed working time never exceeds elapsed real time.
    assert whole * US_PER_HOUR <= (z - x) / timedelta(microseconds=1)


@settings(max_examples=200, deadline=None)
@given(cal=st.sampled_from(CALENDARS), t=instants)
def test_next_opening_is_a_working_instant_not_before_t(cal: BusinessCalendar, t: datetime) -> None:
    opening = cal.next_opening(t)
    assert opening >= t
    assert cal.is_working_instant(opening)
    # Just before it the office was closed unless t was already working.
    if not cal.is_working_instant(t):
        assert cal.business_hours_between(t, opening) == 0.0

"""The dashboard as HTML: the package's Jinja2 templates over the data of :mod:`.view`.

Autoescape is on for every template, so unit names, stage names and reasons
(configuration and label values, not markup) always reach the page as text.
Undefined names raise instead of rendering empty, so a misspelt key fails the
render rather than showing a blank cell.

The page is Persian and right to left by default, English with ``lang="en"``.
Every number carries ``data-metric`` (a stable key, see
:func:`~sada.consumers.dashboard.view.dashboard_data`) and ``data-value`` (the
raw number); its text is the reader's spelling (Persian digits in Persian).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from functools import partial
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import jdatetime
from jinja2 import Environment, PackageLoader, StrictUndefined

from sada.consumers.dashboard.chartviews import render_charts
from sada.consumers.dashboard.words import WORDS, word
from sada.pipeline.domain.calendar import to_jalali
from sada.pipeline.domain.sla import STATUSES

REFRESH_SECONDS = 5

# Persian digits, decimal separator (U+066B) and thousands separator (U+066C).
_PERSIAN_DIGITS = str.maketrans("0123456789.,", "۰۱۲۳۴۵۶۷۸۹٫٬")
_ARABIC_SCRIPT = re.compile("[\u0600-\u06ff\u0750-\u077f\ufb50-\ufdff\ufe70-\ufeff]")


def digits(text: str, lang: str) -> str:
    """``text`` with the reader's digits (and decimal separator)."""
    return text.translate(_PERSIAN_DIGITS) if lang == "fa" else text


def local_name(name: str, lang: str) -> str:
    """The reader's half of a bilingual unit name ("اداره تغذیه / Food Services"), else all of it.

    Split only when exactly one half is in Arabic script, so a name that merely
    contains a slash is shown whole.
    """
    halves = name.split(" / ")
    if len(halves) == 2:
        persian = [bool(_ARABIC_SCRIPT.search(h)) for h in halves]
        if persian.count(True) == 1:
            wanted = lang == "fa"
            return halves[persian.index(wanted)].strip()
    return name


def _raw(value: int | float | None) -> str:
    return "" if value is None else json.dumps(value)


def _spell(value: int | float | None, lang: str, shown: str | None = None) -> str:
    """A number as the reader reads it; ``shown`` replaces the default spelling."""
    if value is None:
        text = "—"
    elif shown is not None:
        text = shown
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = f"{value:,.1f}"
    return digits(text, lang)


def _percent(value: float | None, lang: str) -> str | None:
    if value is None:
        return None
    return digits(f"{round(value * 100)}", lang) + ("٪" if lang == "fa" else "%")


def _clock_text(data: Mapping[str, Any], lang: str) -> str:
    seconds = data["clock"]["seconds"]
    if seconds is None:
        return "—"
    return instant_text(datetime.fromtimestamp(seconds, UTC), lang, data.get("timezone"))


def instant_text(dt: datetime | str | None, lang: str, timezone: str | None = None) -> str:
    """An instant as the reader reads it: Jalali with Persian digits, or ISO local time."""
    if dt is None:
        return "—"
    if isinstance(dt, str):
        dt = datetime.fromisoformat(dt.replace("Z", "+00:00"))
    tz = timezone or "Asia/Tehran"
    if lang == "fa":
        return digits(to_jalali(dt, tz), lang)
    return dt.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M ") + tz


def _day_text(day: str, lang: str) -> str:
    """A date (ISO) as a short day label: Jalali month/day in Persian."""
    d = date.fromisoformat(day)
    if lang == "fa":
        return digits(str(jdatetime.date.fromgregorian(date=d).strftime("%m/%d")), lang)
    return d.strftime("%m-%d")


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader(__name__.rpartition(".")[0], "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        raw=_raw,
        spell=_spell,
        digits=digits,
        percent=_percent,
        local_name=local_name,
        instant=instant_text,
    )
    env.globals.update(
        sla_cards=["open", *STATUSES, "closed"],
        event_cards=["received", "accepted", "rejected", "duplicates", "late", "escalations"],
        kind_fields=[
            "open",
            *STATUSES,
            "closed",
            "first_response_mean_hours",
            "resolution_mean_hours",
        ],
        unit_fields=["open", *STATUSES, "closed"],
        ranking_head=[
            "position",
            "unit",
            "received_visits",
            "in_time",
            "late_responses",
            "ratio",
            "median",
            "satisfaction",
            "escalated_away",
        ],
    )
    return env


_ENV = _environment()
ENV = _ENV  # for other pages of the package (the report)


def spell_number(value: int | float | None, lang: str) -> str:
    """A number as the reader reads it (Persian digits and separators in Persian)."""
    return _spell(value, lang)


def _context(data: Mapping[str, Any], lang: str) -> dict[str, Any]:
    return {
        "data": data,
        "lang": lang,
        "w": WORDS[lang],
        "word": partial(word, lang),
        "clock_text": _clock_text(data, lang) if isinstance(data.get("clock"), dict) else "—",
        "charts": render_charts(
            data["trends"],
            lang,
            lambda v: _spell(v, lang),
            lambda v: _percent(v, lang) or "—",
            lambda d: _day_text(d, lang),
            {
                u["unit_id"]: local_name(u.get("name", u["unit_id"]), lang)
                for u in data["trends"]["units"]
            },
        )
        if data.get("trends")
        else [],
    }


def render_content(data: Mapping[str, Any], lang: str) -> str:
    """The dashboard's content (everything that refreshes), as an HTML fragment."""
    return _ENV.get_template("content.html").render(_context(data, lang))


def _frame(
    lang: str, static: Callable[[str], str], base: str, query: Mapping[str, str]
) -> dict[str, Any]:
    """What every page's frame (``base.html``) needs: direction, links, the other language."""
    other = "en" if lang == "fa" else "fa"
    return {
        "direction": "rtl" if lang == "fa" else "ltr",
        "other": other,
        "other_query": urlencode({**query, "lang": other}),
        "base": base,
        "static": lambda name: base + static(name),
    }


def render_page(
    data: Mapping[str, Any],
    lang: str,
    static: Callable[[str], str],
    query: Mapping[str, str] | None = None,
) -> str:
    """The whole dashboard page; ``static`` gives the URL of a file of ``static/`` by name."""
    return _ENV.get_template("page.html").render(
        _context(data, lang),
        refresh_ms=REFRESH_SECONDS * 1000,
        **_frame(lang, static, "", query or {}),
    )


def render_queue(
    data: Mapping[str, Any], lang: str, static: Callable[[str], str], query: Mapping[str, str]
) -> str:
    """The work-queue page (at ``/dashboard/queue``)."""
    plain = {k: v for k, v in query.items() if k not in ("lang", "cursor", "format")}
    return _ENV.get_template("queue.html").render(
        _context(data, lang),
        csv_query=urlencode({**plain, "format": "csv"}),
        next_query=urlencode({**plain, "lang": lang, "cursor": data.get("next") or ""}),
        **_frame(lang, static, "../", query),
    )


def render_submission(
    data: Mapping[str, Any] | None,
    lang: str,
    static: Callable[[str], str],
    query: Mapping[str, str],
) -> str:
    """A submission's page (at ``/dashboard/submission?code=``); ``None``: not found."""
    context = _context(data or {}, lang)
    return _ENV.get_template("submission.html").render(
        context,
        s=None if data is None else data["submission"],
        **_frame(lang, static, "../", query),
    )

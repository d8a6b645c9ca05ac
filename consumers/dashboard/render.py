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
from datetime import UTC, datetime
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined

from sada.consumers.dashboard.words import WORDS, word
from sada.pipeline.domain.calendar import to_jalali
from sada.pipeline.domain.sla import STATUSES

REFRESH_SECONDS = 5

_PERSIAN_DIGITS = str.maketrans("0123456789.", "۰۱۲۳۴۵۶۷۸۹٫")
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
        text = f"{value:,}" if lang == "en" else f"{value}"
    else:
        text = f"{value:.1f}"
    return digits(text, lang)


def _percent(value: float | None, lang: str) -> str | None:
    if value is None:
        return None
    return digits(f"{round(value * 100)}", lang) + ("٪" if lang == "fa" else "%")


def _clock_text(data: Mapping[str, Any], lang: str) -> str:
    seconds = data["clock"]["seconds"]
    if seconds is None:
        return "—"
    dt = datetime.fromtimestamp(seconds, UTC)
    tz = str(data.get("timezone") or "Asia/Tehran")
    if lang == "fa":
        return digits(to_jalali(dt, tz), lang)
    return dt.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S ") + tz


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader(__name__.rpartition(".")[0], "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        raw=_raw, spell=_spell, digits=digits, percent=_percent, local_name=local_name
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


def _context(data: Mapping[str, Any], lang: str) -> dict[str, Any]:
    return {
        "data": data,
        "lang": lang,
        "w": WORDS[lang],
        "word": partial(word, lang),
        "clock_text": _clock_text(data, lang),
    }


def render_content(data: Mapping[str, Any], lang: str) -> str:
    """The dashboard's content (everything that refreshes), as an HTML fragment."""
    return _ENV.get_template("content.html").render(_context(data, lang))


def render_page(data: Mapping[str, Any], lang: str, static: Callable[[str], str]) -> str:
    """The whole dashboard page; ``static`` gives the URL of a file of ``static/`` by name."""
    return _ENV.get_template("page.html").render(
        _context(data, lang),
        direction="rtl" if lang == "fa" else "ltr",
        other="en" if lang == "fa" else "fa",
        refresh_ms=REFRESH_SECONDS * 1000,
        static=static,
    )

"""The dashboard's charts: :mod:`.trends`' data drawn with :mod:`.charts`, in the reader's words."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from markupsafe import Markup

from sada.consumers.dashboard.charts import COLORS, Series, bars, heatmap
from sada.consumers.dashboard.words import word


def render_charts(
    trends: Mapping[str, Any],
    lang: str,
    spell: Callable[[Any], str],
    percent: Callable[[float | None], str],
    day: Callable[[str], str],
    names: Mapping[str, str] | None = None,
) -> list[Markup]:
    """Intake and escalations per day, compliance per unit over weeks, backlog by age."""
    w = partial_word(lang)
    rtl = lang == "fa"
    empty = w("no_data")
    out = [
        bars(
            "daily",
            w("chart_daily"),
            [day(d) for d in trends["days"]],
            [
                Series("intake", w("intake"), trends["intake"], COLORS[0]),
                Series("escalated", w("escalations"), trends["escalated"], COLORS[1]),
            ],
            spell,
            rtl=rtl,
            empty=empty,
        ),
        heatmap(
            "compliance",
            w("chart_compliance"),
            [
                (u["unit_id"], (names or {}).get(u["unit_id"], u["unit_id"]))
                for u in trends["units"]
            ],
            [day(d) for d in trends["weeks"]],
            [u["in_time_ratio"] for u in trends["units"]],
            percent,
            rtl=rtl,
            empty=empty,
        ),
        bars(
            "backlog",
            w("chart_backlog"),
            [_band(low, high, lang, spell) for low, high in trends["age_bands"]],
            [Series("open", w("open"), trends["backlog"], COLORS[2])],
            spell,
            rtl=rtl,
            empty=empty,
        ),
    ]
    return out


def partial_word(lang: str) -> Callable[[str], str]:
    return lambda key: word(lang, key)


def _band(low: int, high: int | None, lang: str, spell: Callable[[Any], str]) -> str:
    days = word(lang, "days")
    if high is None:
        return f"≥ {spell(low)} {days}"
    return f"{spell(low)}–{spell(high)} {days}"

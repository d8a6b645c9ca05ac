"""A report (:func:`sada.consumers.report.build_report`) as one self-contained HTML page.

The page carries its stylesheet and its SVG charts inline (the dashboard's
:mod:`.charts`): it can be mailed, archived or printed, and opens with no
server and no internet. Persian reports are right to left, with Jalali
periods, Persian digits and separators.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files
from typing import Any

from markupsafe import Markup

from sada.consumers.dashboard.charts import COLORS, Series, bars
from sada.consumers.dashboard.render import ENV, digits, local_name, spell_number
from sada.consumers.dashboard.words import WORDS, word


def render_report(report: Mapping[str, Any]) -> str:
    lang = report["lang"]
    rows = report["rows"]
    names = [local_name(r["unit_name"], lang) for r in rows]
    rtl = lang == "fa"

    def spell(value: Any) -> str:
        return spell_number(value, lang)

    empty = word(lang, "no_data")
    charts = [
        bars(
            "answers",
            word(lang, "report_chart_answers"),
            names,
            [
                Series("received", word(lang, "received_visits"), [r["received"] for r in rows]),
                Series(
                    "in_time",
                    word(lang, "in_time"),
                    [r["answered_in_time"] for r in rows],
                    COLORS[3],
                ),
                Series("late", word(lang, "late_responses"), [r["late"] for r in rows], COLORS[1]),
            ],
            spell,
            rtl=rtl,
            empty=empty,
        ),
        bars(
            "ratio",
            word(lang, "report_chart_ratio"),
            names,
            [
                Series(
                    "in_time_ratio",
                    word(lang, "ratio"),
                    [round(100 * (r["in_time_ratio"] or 0), 1) for r in rows],
                    COLORS[0],
                )
            ],
            spell,
            rtl=rtl,
            empty=empty,
        ),
    ]
    css = files("sada.consumers.dashboard").joinpath("static", "dashboard.css").read_text("utf-8")
    period = (
        f"{digits(report['start_jalali'], lang)} – {digits(report['end_jalali'], lang)}"
        if lang == "fa"
        else f"{report['start']} – {report['end']}"
    )
    return ENV.get_template("report.html").render(
        report=report,
        rows=rows,
        lang=lang,
        direction="rtl" if rtl else "ltr",
        w=WORDS[lang],
        word=lambda key: word(lang, key),
        charts=charts,
        css=Markup(css),
        period_text=period,
    )

"""The built-in operations dashboard: ``GET /dashboard`` and its JSON, ``GET /api/v1/dashboard``.

Every number comes from the same place as ``/metrics``: the worker's metrics
registry (counters, and the gauges of the cached store snapshot), so the page
and a Prometheus scrape agree. The units' ranking, which has no metric, comes
from :func:`~sada.consumers.snapshot.unit_ranking`.

The page is one self-contained document (no external assets: operators'
networks may have no internet), Persian and right-to-left by default,
English with ``?lang=en``. It refreshes itself every few seconds by fetching
its own content (``?part=content``) and swapping it in; without JavaScript it
is still a complete page. Every number carries ``data-metric`` (a stable key)
and ``data-value`` (the raw number); the key spellings are listed in
:func:`dashboard_data`.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from sada.consumers.snapshot import unit_ranking
from sada.consumers.store import SqlStore
from sada.pipeline.domain.calendar import to_jalali
from sada.pipeline.domain.config import KINDS, Config
from sada.pipeline.domain.rules import Rules

REFRESH_SECONDS = 5
RANKING_TTL_SECONDS = 15.0
LANGS = ("fa", "en")

STATUSES = ("on_time", "at_risk", "overdue")
ESCALATION_REASONS = ("support_threshold", "first_response_overdue", "resolution_overdue")


# -- numbers ----------------------------------------------------------------------------

Samples = dict[str, list[tuple[dict[str, str], float]]]


def _samples(registry: CollectorRegistry) -> Samples:
    out: Samples = {}
    for family in registry.collect():
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _sum(samples: Samples, name: str, **match: str) -> int | float:
    return _number(
        sum(
            v
            for labels, v in samples.get(name, [])
            if all(labels.get(k) == want for k, want in match.items())
        )
    )


def _by(samples: Samples, name: str, label: str, **match: str) -> dict[str, int | float]:
    sums: dict[str, float] = {}
    for labels, v in samples.get(name, []):
        if all(labels.get(k) == want for k, want in match.items()):
            key = labels.get(label, "")
            sums[key] = sums.get(key, 0.0) + v
    return {k: _number(v) for k, v in sorted(sums.items())}


def _mean(samples: Samples, name: str, **match: str) -> float | None:
    count = _sum(samples, f"{name}_count", **match)
    return _sum(samples, f"{name}_sum", **match) / count if count else None


def dashboard_data(
    registry: CollectorRegistry, config: Config, ranking: list[dict[str, Any]]
) -> dict[str, Any]:
    """The dashboard's numbers, read from ``registry`` as ``/metrics`` exports them.

    ``data-metric`` keys on the page: ``overview:<field>`` for each field of
    ``overview``; ``clock:seconds``; ``lag:<stage>:<topic>``;
    ``worker:<stage>``; ``escalations:reason:<reason>`` and
    ``escalations:level:<level>``; ``rejected:<reason>``;
    ``kind:<kind>:<field>`` and ``unit:<unit id>:<field>`` for each field of a
    row of ``kinds`` and ``units``; ``rank:<unit id>:<field>`` for the ranking.
    """
    s = _samples(registry)
    open_by_unit = _by(s, "sada_submissions_open", "unit")
    closed_by_unit = _by(s, "sada_submissions_closed", "unit")
    units = []
    for unit in sorted(set(open_by_unit) | set(closed_by_unit)):
        row: dict[str, Any] = {
            "unit_id": unit,
            "name": _unit_name(config, unit),
            "open": open_by_unit.get(unit, 0),
        }
        for status in STATUSES:
            row[status] = _sum(s, "sada_submissions_open", unit=unit, status=status)
        row["closed"] = closed_by_unit.get(unit, 0)
        units.append(row)
    units.sort(key=lambda r: (-r["overdue"], -r["at_risk"], -r["open"], r["unit_id"]))
    kinds = []
    for kind in KINDS:
        row = {"kind": kind, "open": _sum(s, "sada_submissions_open", kind=kind)}
        for status in STATUSES:
            row[status] = _sum(s, "sada_submissions_open", kind=kind, status=status)
        row["closed"] = _sum(s, "sada_submissions_closed", kind=kind)
        row["first_response_mean_hours"] = _mean(s, "sada_first_response_business_hours", kind=kind)
        row["resolution_mean_hours"] = _mean(s, "sada_resolution_business_hours", kind=kind)
        kinds.append(row)
    clock = s.get("sada_pipeline_clock_seconds")
    clock_seconds = _number(clock[0][1]) if clock else None
    lag = [
        {"stage": labels.get("stage", ""), "topic": labels.get("topic", ""), "messages": _number(v)}
        for labels, v in s.get("sada_consumer_lag_messages", [])
    ]
    overview = {
        "open": _sum(s, "sada_submissions_open"),
        **{status: _sum(s, "sada_submissions_open", status=status) for status in STATUSES},
        "closed": _sum(s, "sada_submissions_closed"),
        "received": _sum(s, "sada_events_received_total"),
        "accepted": _sum(s, "sada_events_accepted_total"),
        "rejected": _sum(s, "sada_events_rejected_total"),
        "duplicates": _sum(s, "sada_events_duplicate_total"),
        "late": _sum(s, "sada_events_late_total"),
        "escalations": _sum(s, "sada_escalations_total"),
        "lag": _number(sum(v for _, v in s.get("sada_consumer_lag_messages", []))),
        "snapshot_errors": _sum(s, "sada_snapshot_errors_total"),
    }
    rejected = {k: v for k, v in _by(s, "sada_events_rejected_total", "reason").items() if v}
    names = {r["unit_id"]: _unit_name(config, r["unit_id"]) for r in ranking}
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "clock": {
            "seconds": clock_seconds,
            "time": None
            if clock_seconds is None
            else datetime.fromtimestamp(clock_seconds, UTC).isoformat(),
        },
        "overview": overview,
        "escalations": {
            "reason": {r: _sum(s, "sada_escalations_total", reason=r) for r in ESCALATION_REASONS},
            "level": {k: v for k, v in _by(s, "sada_escalations_total", "level").items() if v},
        },
        "rejected": rejected,
        "workers": {labels.get("stage", ""): bool(v) for labels, v in s.get("sada_worker_up", [])},
        "lag": lag,
        "kinds": kinds,
        "units": units,
        "ranking": [{**r, "name": names[r["unit_id"]]} for r in ranking],
        "timezone": config.calendar.timezone,
    }


def _unit_name(config: Config, unit_id: str) -> str:
    unit = config.units.get(unit_id)
    return unit.name if unit is not None else unit_id


class _Ranking:
    """The units' ranking, recomputed at most once per ``ttl`` (it reads whole tables)."""

    def __init__(self, store: SqlStore, rules: Rules, ttl: float = RANKING_TTL_SECONDS) -> None:
        self.store = store
        self.rules = rules
        self.ttl = ttl
        self._lock = threading.Lock()
        self._value: list[dict[str, Any]] | None = None
        self._taken = 0.0

    def __call__(self) -> list[dict[str, Any]]:
        with self._lock:
            now = time.monotonic()
            if self._value is None or now - self._taken >= self.ttl:
                self._value = unit_ranking(self.store, self.rules)
                self._taken = now
            return [dict(r) for r in self._value]


# -- words ------------------------------------------------------------------------------

WORDS: Mapping[str, Mapping[str, str]] = {
    "fa": {
        "title": "صدا — داشبورد عملیات",
        "subtitle": "پایش مهلت‌های پاسخ‌گویی به شکایت‌ها، انتقادها، پیشنهادها و پرسش‌ها",
        "switch": "English",
        "overview": "نمای کلی",
        "open": "باز",
        "on_time": "در مهلت",
        "at_risk": "در معرض تأخیر",
        "overdue": "گذشته از مهلت",
        "closed": "بسته‌شده",
        "events": "رویدادها",
        "received": "دریافتی",
        "accepted": "پذیرفته",
        "rejected": "ردشده",
        "duplicates": "تکراری",
        "late": "دیررس",
        "escalations": "ارجاع به سطح بالاتر",
        "by_reason": "بر حسب علت",
        "by_level": "بر حسب سطح",
        "level": "سطح",
        "rejections": "رویدادهای ردشده بر حسب علت",
        "none": "هیچ",
        "pipeline": "خط پردازش",
        "clock": "ساعت خط پردازش (زمان رویداد)",
        "lag": "پیام‌های در صف",
        "workers": "بخش‌ها",
        "up": "فعال",
        "down": "متوقف",
        "snapshot_errors": "خطای خواندن وضعیت",
        "kinds": "بر حسب نوع",
        "kind": "نوع",
        "first_response_mean_hours": "میانگین پاسخ اولیه (ساعت کاری)",
        "resolution_mean_hours": "میانگین رسیدگی (ساعت کاری)",
        "units": "واحدها",
        "unit": "واحد",
        "ranking": "رتبه‌بندی واحدها",
        "position": "رتبه",
        "received_visits": "دریافتی",
        "in_time": "پاسخ اولیه در مهلت",
        "late_responses": "پاسخ اولیه با تأخیر یا بی‌پاسخ",
        "ratio": "سهم در مهلت",
        "median": "میانه زمان پاسخ اولیه (ساعت کاری)",
        "satisfaction": "میانگین رضایت (۱ تا ۵)",
        "escalated_away": "ارجاع به بالا: برای تأخیر / همه",
        "ranking_note": (
            "رتبه بر پایه سهم پاسخ‌های اولیه در مهلت و سپس میانه زمان پاسخ اولیه است. "
            "هر بار که درخواستی به واحدی می‌رسد (ثبت، ارجاع یا ارجاع به سطح بالاتر) یک "
            "دریافت شمرده می‌شود؛ پاسخ پس از مهلت یا از دست رفتن درخواست به سبب گذشتن "
            "مهلت پاسخ اولیه، تأخیر است."
        ),
        "updated": "به‌روزرسانی",
        "stale": "ارتباط با سرور قطع است؛ اعداد به‌روز نیستند",
        "no_data": "هنوز داده‌ای نیست",
        "support_threshold": "رسیدن حمایت به آستانه",
        "first_response_overdue": "گذشتن مهلت پاسخ اولیه",
        "resolution_overdue": "گذشتن مهلت رسیدگی",
        "complaint": "شکایت",
        "criticism": "انتقاد",
        "suggestion": "پیشنهاد",
        "question": "پرسش",
        "invalid_json": "JSON نامعتبر",
        "too_large": "بزرگ‌تر از حد مجاز",
        "invalid_envelope": "پوشش CloudEvent نامعتبر",
        "unknown_type": "نوع رویداد ناشناخته",
        "wrong_topic": "تاپیک نادرست",
        "schema_violation": "ناسازگار با طرح‌واره",
        "invalid_tracking_code": "کد رهگیری نامعتبر",
        "subject_mismatch": "ناهمخوانی subject",
        "unknown_unit": "واحد ناشناخته",
        "unknown_submission": "درخواست ناشناخته",
        "duplicate_submission": "درخواست تکراری",
        "duplicate_tracking_code": "کد رهگیری تکراری",
        "forbidden": "غیرمجاز",
        "rate_limited": "فراتر از سقف نرخ",
        "unknown": "نامشخص",
        "count": "تعداد",
    },
    "en": {
        "title": "Sada — operations dashboard",
        "subtitle": "Answering in time: complaints, criticisms, suggestions and questions",
        "switch": "فارسی",
        "overview": "Overview",
        "open": "Open",
        "on_time": "On time",
        "at_risk": "At risk",
        "overdue": "Overdue",
        "closed": "Closed",
        "events": "Events",
        "received": "Received",
        "accepted": "Accepted",
        "rejected": "Rejected",
        "duplicates": "Duplicates",
        "late": "Late",
        "escalations": "Escalations",
        "by_reason": "By reason",
        "by_level": "By level reached",
        "level": "Level",
        "rejections": "Rejected events by reason",
        "none": "none",
        "pipeline": "Pipeline",
        "clock": "Pipeline clock (event time)",
        "lag": "Messages behind",
        "workers": "Stages",
        "up": "up",
        "down": "down",
        "snapshot_errors": "Snapshot read errors",
        "kinds": "By kind",
        "kind": "Kind",
        "first_response_mean_hours": "Mean first response (business h)",
        "resolution_mean_hours": "Mean resolution (business h)",
        "units": "Units",
        "unit": "Unit",
        "ranking": "Units ranked",
        "position": "Rank",
        "received_visits": "Received",
        "in_time": "First response in time",
        "late_responses": "Late or unanswered",
        "ratio": "In time",
        "median": "Median first response (business h)",
        "satisfaction": "Mean satisfaction (1–5)",
        "escalated_away": "Escalated away: overdue / all",
        "ranking_note": (
            "Ranked by the share of first responses in time, then by the median time to "
            "first response. Every arrival at a unit (creation, referral or escalation) is "
            "one received; a response after its deadline, or losing the submission to a "
            "first-response escalation, is late."
        ),
        "updated": "Updated",
        "stale": "Lost contact with the server; numbers are not current",
        "no_data": "No data yet",
        "support_threshold": "Support threshold",
        "first_response_overdue": "First response overdue",
        "resolution_overdue": "Resolution overdue",
        "complaint": "Complaint",
        "criticism": "Criticism",
        "suggestion": "Suggestion",
        "question": "Question",
        "count": "Count",
        "invalid_json": "Not JSON",
        "too_large": "Too large",
        "invalid_envelope": "Invalid CloudEvent envelope",
        "unknown_type": "Unknown event type",
        "wrong_topic": "Wrong topic",
        "schema_violation": "Schema violation",
        "invalid_tracking_code": "Invalid tracking code",
        "subject_mismatch": "Subject mismatch",
        "unknown_unit": "Unknown unit",
        "unknown_submission": "Unknown submission",
        "duplicate_submission": "Duplicate submission",
        "duplicate_tracking_code": "Duplicate tracking code",
        "forbidden": "Forbidden",
        "rate_limited": "Rate limited",
        "unknown": "Unknown",
    },
}

_PERSIAN_DIGITS = str.maketrans("0123456789.", "۰۱۲۳۴۵۶۷۸۹٫")


def _word(lang: str, key: str) -> str:
    return WORDS[lang].get(key) or WORDS["en"].get(key) or key


# -- rendering --------------------------------------------------------------------------


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _digits(text: str, lang: str) -> str:
    return text.translate(_PERSIAN_DIGITS) if lang == "fa" else text


def _raw(value: int | float | None) -> str:
    return "" if value is None else json.dumps(value)


def _num(
    key: str,
    value: int | float | None,
    lang: str,
    *,
    shown: str | None = None,
    css: str = "num",
) -> str:
    """One number: the raw value in ``data-value``, the reader's spelling as text."""
    if value is None:
        text = "—"
    elif shown is not None:
        text = shown
    elif isinstance(value, int):
        text = f"{value:,}" if lang == "en" else f"{value}"
    else:
        text = f"{value:.1f}"
    return (
        f'<span class="{css}" data-metric="{_esc(key)}" data-value="{_esc(_raw(value))}">'
        f"{_esc(_digits(text, lang))}</span>"
    )


def _percent(value: float | None, lang: str) -> str | None:
    if value is None:
        return None
    return _digits(f"{round(value * 100)}", lang) + ("٪" if lang == "fa" else "%")


def _card(label: str, body: str, css: str = "") -> str:
    return f'<div class="card {css}"><div class="label">{_esc(label)}</div>{body}</div>'


def _table(head: Iterable[str], rows: Iterable[Iterable[str]], css: str = "") -> str:
    th = "".join(f"<th>{_esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _clock_text(data: Mapping[str, Any], lang: str) -> str:
    seconds = data["clock"]["seconds"]
    if seconds is None:
        return "—"
    dt = datetime.fromtimestamp(seconds, UTC)
    tz = str(data.get("timezone") or "Asia/Tehran")
    if lang == "fa":
        return _digits(to_jalali(dt, tz), lang)
    from zoneinfo import ZoneInfo

    return dt.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S ") + tz


_ARABIC_SCRIPT = re.compile("[\u0600-\u06ff\u0750-\u077f\ufb50-\ufdff\ufe70-\ufeff]")


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


def _unit_cell(unit_id: str, name: str, lang: str) -> str:
    return (
        f'<bdi class="unit-name" title="{_esc(name)}">{_esc(local_name(name, lang))}</bdi>'
        f'<br><code dir="ltr">{_esc(unit_id)}</code>'
    )


def render_content(data: Mapping[str, Any], lang: str) -> str:
    """The dashboard's content (everything that refreshes), as an HTML fragment."""
    w = WORDS[lang]
    o = data["overview"]
    sla_cards = "".join(
        _card(w[k], _num(f"overview:{k}", o[k], lang, css="num big"), k)
        for k in ("open", "on_time", "at_risk", "overdue", "closed")
    )
    event_cards = "".join(
        _card(w[k], _num(f"overview:{k}", o[k], lang, css="num big"), k)
        for k in ("received", "accepted", "rejected", "duplicates", "late", "escalations")
    )
    reasons = _table(
        [w["by_reason"], w["count"]],
        [
            [_esc(_word(lang, r)), _num(f"escalations:reason:{r}", n, lang)]
            for r, n in data["escalations"]["reason"].items()
        ],
        "compact",
    )
    levels = data["escalations"]["level"]
    level_table = (
        _table(
            [w["by_level"], w["count"]],
            [
                [_esc(_digits(level, lang)), _num(f"escalations:level:{level}", n, lang)]
                for level, n in levels.items()
            ],
            "compact",
        )
        if levels
        else f'<p class="muted">{_esc(w["none"])}</p>'
    )
    rejected = data["rejected"]
    rejected_table = (
        _table(
            [w["rejections"], w["count"]],
            [
                [
                    f'{_esc(_word(lang, r))}<br><code dir="ltr">{_esc(r)}</code>',
                    _num(f"rejected:{r}", n, lang),
                ]
                for r, n in rejected.items()
            ],
            "compact",
        )
        if rejected
        else f'<p class="muted">{_esc(w["rejections"])}: {_esc(w["none"])}</p>'
    )
    workers = " ".join(
        f'<span class="pill {"up" if up else "down"}" data-metric="worker:{_esc(stage)}" '
        f'data-value="{1 if up else 0}">{_esc(stage)}: {_esc(w["up"] if up else w["down"])}'
        "</span>"
        for stage, up in sorted(data["workers"].items())
    )
    lag_rows = [
        [
            f'<code dir="ltr">{_esc(r["stage"])} · {_esc(r["topic"])}</code>',
            _num(f"lag:{r['stage']}:{r['topic']}", r["messages"], lang),
        ]
        for r in data["lag"]
    ]
    pipeline = (
        '<div class="pipeline">'
        + _card(
            w["clock"],
            _num(
                "clock:seconds",
                data["clock"]["seconds"],
                lang,
                shown=_clock_text(data, lang),
                css="num clock",
            ),
        )
        + _card(w["lag"], _num("overview:lag", o["lag"], lang, css="num big"))
        + _card(w["workers"], workers or "—")
        + _card(w["snapshot_errors"], _num("overview:snapshot_errors", o["snapshot_errors"], lang))
        + "</div>"
        + (_table([w["lag"], w["count"]], lag_rows, "compact") if lag_rows else "")
    )
    kinds = _table(
        [
            w["kind"],
            w["open"],
            w["on_time"],
            w["at_risk"],
            w["overdue"],
            w["closed"],
            w["first_response_mean_hours"],
            w["resolution_mean_hours"],
        ],
        [
            [
                _esc(_word(lang, k["kind"])),
                *(
                    _num(f"kind:{k['kind']}:{f}", k[f], lang)
                    for f in (
                        "open",
                        "on_time",
                        "at_risk",
                        "overdue",
                        "closed",
                        "first_response_mean_hours",
                        "resolution_mean_hours",
                    )
                ),
            ]
            for k in data["kinds"]
        ],
    )
    units = (
        _table(
            [w["unit"], w["open"], w["on_time"], w["at_risk"], w["overdue"], w["closed"]],
            [
                [
                    _unit_cell(u["unit_id"], u["name"], lang),
                    *(
                        _num(f"unit:{u['unit_id']}:{f}", u[f], lang)
                        for f in ("open", "on_time", "at_risk", "overdue", "closed")
                    ),
                ]
                for u in data["units"]
            ],
            "units",
        )
        if data["units"]
        else f'<p class="muted">{_esc(w["no_data"])}</p>'
    )
    ranking = (
        _table(
            [
                w["position"],
                w["unit"],
                w["received_visits"],
                w["in_time"],
                w["late_responses"],
                w["ratio"],
                w["median"],
                w["satisfaction"],
                w["escalated_away"],
            ],
            [_rank_row(r, lang) for r in data["ranking"]],
            "ranking",
        )
        if data["ranking"]
        else f'<p class="muted">{_esc(w["no_data"])}</p>'
    )
    return (
        f'<section><h2>{_esc(w["overview"])}</h2><div class="cards sla">{sla_cards}</div>'
        f'<div class="cards events">{event_cards}</div>'
        f'<div class="columns">{reasons}{level_table}{rejected_table}</div></section>'
        f"<section><h2>{_esc(w['pipeline'])}</h2>{pipeline}</section>"
        f"<section><h2>{_esc(w['kinds'])}</h2>{kinds}</section>"
        f"<section><h2>{_esc(w['units'])}</h2>{units}</section>"
        f"<section><h2>{_esc(w['ranking'])}</h2>{ranking}"
        f'<p class="muted note">{_esc(w["ranking_note"])}</p></section>'
        f'<p class="muted updated">{_esc(w["updated"])}: '
        f'<time dir="ltr">{_esc(data["generated_at"])}</time></p>'
    )


def _rank_row(r: Mapping[str, Any], lang: str) -> list[str]:
    u = r["unit_id"]
    ratio = r["in_time_ratio"]
    satisfaction = r["satisfaction_mean"]
    bar = "" if ratio is None else f' <meter min="0" max="1" value="{ratio:.4f}"></meter>'
    return [
        _num(f"rank:{u}:position", r["position"], lang),
        _unit_cell(u, r["name"], lang),
        _num(f"rank:{u}:received", r["received"], lang),
        _num(f"rank:{u}:first_responses_in_time", r["first_responses_in_time"], lang),
        _num(f"rank:{u}:first_responses_late", r["first_responses_late"], lang),
        _num(f"rank:{u}:in_time_ratio", ratio, lang, shown=_percent(ratio, lang)) + bar,
        _num(f"rank:{u}:median_first_response_hours", r["median_first_response_hours"], lang),
        _num(
            f"rank:{u}:satisfaction_mean",
            satisfaction,
            lang,
            shown=None if satisfaction is None else f"{satisfaction:.2f}",
        ),
        _num(f"rank:{u}:overdue_escalations_away", r["overdue_escalations_away"], lang)
        + " / "
        + _num(f"rank:{u}:escalations_away", r["escalations_away"], lang),
    ]


_STYLE = """
:root { color-scheme: light; --ok: #1b7f3b; --warn: #b26a00; --bad: #b3261e; --ink: #1d232b;
  --muted: #5f6b7a; --line: #d9dee5; --bg: #f5f7fa; --card: #fff; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 15px/1.5 "Vazirmatn", "Noto Sans Arabic", "Noto Naskh Arabic", "DejaVu Sans", Tahoma,
  system-ui, sans-serif; }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: .5rem 1.5rem;
  padding: 1rem 1.5rem; background: #12324a; color: #fff; }
header h1 { margin: 0; font-size: 1.4rem; }
header p { margin: 0; opacity: .85; }
header a { color: #fff; margin-inline-start: auto; }
#refresh-state.stale { background: var(--bad); padding: .1rem .6rem; border-radius: 1rem; }
main { padding: 1rem 1.5rem 2rem; max-width: 1400px; margin: 0 auto; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 .6rem; border-block-end: 2px solid var(--line); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: .7rem;
  margin-block-end: .7rem; }
.pipeline { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr));
  gap: .7rem; margin-block-end: .7rem; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: .5rem;
  padding: .6rem .8rem; border-inline-start: 4px solid var(--line); }
.card .label { color: var(--muted); font-size: .85rem; }
.card .big { font-size: 1.8rem; font-weight: 700; }
.card .clock { font-size: 1.15rem; font-weight: 600; }
.card.on_time { border-inline-start-color: var(--ok); }
.card.at_risk { border-inline-start-color: var(--warn); }
.card.overdue, .card.rejected { border-inline-start-color: var(--bad); }
.columns { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
table { border-collapse: collapse; background: var(--card); width: 100%; margin-block-end: .5rem; }
table.compact { width: auto; min-width: 16rem; }
th, td { border: 1px solid var(--line); padding: .35rem .6rem; text-align: start;
  vertical-align: top; }
th { background: #eef1f5; font-weight: 600; font-size: .9rem; }
td .num { font-variant-numeric: tabular-nums; }
code { font-size: .8rem; color: var(--muted); }
.pill { display: inline-block; padding: .05rem .6rem; border-radius: 1rem; margin: .1rem;
  font-size: .85rem; }
.pill.up { background: #dff3e4; color: var(--ok); }
.pill.down { background: #fbe0de; color: var(--bad); }
meter { width: 5rem; vertical-align: middle; }
.muted { color: var(--muted); }
.note { font-size: .85rem; max-width: 60rem; }
"""

_SCRIPT = """
(function () {
  var lang = document.documentElement.lang;
  var state = document.getElementById("refresh-state");
  var content = document.getElementById("content");
  function refresh() {
    fetch(location.pathname + "?part=content&lang=" + lang, {cache: "no-store"})
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
      .then(function (html) {
        content.innerHTML = html; state.textContent = ""; state.className = "";
        content.dataset.refreshes = String((Number(content.dataset.refreshes) || 0) + 1);
      })
      .catch(function () { state.textContent = state.dataset.stale; state.className = "stale"; });
  }
  setInterval(refresh, %d);
})();
"""


def render_page(data: Mapping[str, Any], lang: str, nonce: str) -> str:
    """The whole dashboard page; ``nonce`` admits its one inline style and script."""
    w = WORDS[lang]
    other = "en" if lang == "fa" else "fa"
    direction = "rtl" if lang == "fa" else "ltr"
    return (
        f'<!doctype html><html lang="{lang}" dir="{direction}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(w['title'])}</title>"
        f'<style nonce="{nonce}">{_STYLE}</style></head><body>'
        f"<header><h1>{_esc(w['title'])}</h1><p>{_esc(w['subtitle'])}</p>"
        f'<span id="refresh-state" data-stale="{_esc(w["stale"])}"></span>'
        f'<a href="?lang={other}" hreflang="{other}" lang="{other}">{_esc(w["switch"])}</a>'
        "</header>"
        f'<main id="content">{render_content(data, lang)}</main>'
        f'<script nonce="{nonce}">{_SCRIPT % (REFRESH_SECONDS * 1000)}</script>'
        "</body></html>"
    )


# -- HTTP -------------------------------------------------------------------------------


class DashboardView:
    """The two dashboard routes over one metrics registry, store and configuration."""

    def __init__(self, registry: CollectorRegistry, store: SqlStore, config: Config) -> None:
        self.registry = registry
        self.config = config
        # Its own calendar: the projector's is used from another thread.
        self.ranking = _Ranking(store, Rules.from_config(config))

    def data(self) -> dict[str, Any]:
        """Blocking (reads the store): call from a thread."""
        return dashboard_data(self.registry, self.config, self.ranking())

    async def page(self, request: web.Request) -> web.Response:
        lang = request.query.get("lang", "fa")
        if lang not in LANGS:
            lang = "fa"
        data = await asyncio.to_thread(self.data)
        if request.query.get("part") == "content":
            return _html(render_content(data, lang))
        nonce = secrets.token_urlsafe(16)
        return _html(render_page(data, lang, nonce), nonce)

    async def api(self, _request: web.Request) -> web.Response:
        data = await asyncio.to_thread(self.data)
        return web.json_response(data, headers={"Cache-Control": "no-store"})


def _html(body: str, nonce: str | None = None) -> web.Response:
    headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    if nonce is not None:
        # Nothing outside this server can load: the page works with no internet.
        headers["Content-Security-Policy"] = (
            f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; "
            "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'"
        )
    return web.Response(text=body, content_type="text/html", charset="utf-8", headers=headers)


def routes(worker: Any) -> Callable[[web.Application], None]:
    """The installer of ``GET /dashboard`` and ``GET /api/v1/dashboard`` for ``sada run``.

    ``worker`` is the running :class:`~sada.pipeline.worker.Worker`: its
    metrics registry, store and configuration are read.
    """
    view = DashboardView(worker.metrics.registry, worker.store, worker.config)

    def install(app: web.Application) -> None:
        app.router.add_get("/dashboard", view.page)
        app.router.add_get("/api/v1/dashboard", view.api)

    return install

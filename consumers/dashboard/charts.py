"""Charts as SVG drawn on the server: no script, nothing fetched; they print and work offline.

Each function returns markup (a ``<figure>`` holding an ``<svg>``), with every
text escaped. In Persian the time axis runs right to left, as the page reads:
the earliest bucket is on the right. Each ``<svg>`` lays out in physical
coordinates (``direction="ltr"``; the words inside still read in their own
direction). Numbers are spelled for the reader (``spell``: Persian digits and
separators in Persian). Every bar or cell
carries ``data-chart``, ``data-key`` and ``data-value`` so a test reads what
was drawn, and a ``<title>`` for the reader who hovers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

Spell = Callable[[float | int | None], str]

WIDTH = 640
HEIGHT = 220
_PAD_TOP = 16
_PAD_BOTTOM = 42
_PAD_SIDE = 40
COLORS = ("#2f6ea5", "#b3261e", "#b26a00", "#1b7f3b")


@dataclass(frozen=True, slots=True)
class Series:
    key: str  # stable, for data-key
    label: str  # the reader's words
    values: Sequence[int | float]
    color: str = COLORS[0]


def _x_order(n: int, rtl: bool) -> list[int]:
    """Slot of each bucket: left to right in English, right to left in Persian."""
    return [n - 1 - i for i in range(n)] if rtl else list(range(n))


def bars(
    chart: str,
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    spell: Spell,
    *,
    rtl: bool,
    empty: str,
) -> Markup:
    """Grouped bars, one group per label (a day, an age band), one bar per series."""
    n = len(labels)
    top = max((v for s in series for v in s.values), default=0)
    if n == 0 or top <= 0:
        return _figure(chart, title, f'<p class="muted">{escape(empty)}</p>', series)
    plot_w = WIDTH - 2 * _PAD_SIDE
    plot_h = HEIGHT - _PAD_TOP - _PAD_BOTTOM
    slot = plot_w / n
    bar_w = max(2.0, slot * 0.8 / len(series))
    parts = [_axis(top, spell, rtl)]
    slots = _x_order(n, rtl)
    for i, label in enumerate(labels):
        x0 = _PAD_SIDE + slots[i] * slot + slot * 0.1
        for j, s in enumerate(series):
            value = s.values[i]
            h = plot_h * value / top
            x = x0 + (len(series) - 1 - j if rtl else j) * bar_w
            y = _PAD_TOP + plot_h - h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w - 1:.1f}" height="{h:.1f}" '
                f'fill="{s.color}" data-chart="{escape(chart)}" '
                f'data-key="{escape(s.key)}:{i}" data-value="{value}">'
                f"<title>{escape(label)} — {escape(s.label)}: {escape(spell(value))}</title></rect>"
            )
        if n <= 16 or i % max(1, n // 8) == 0:
            cx = x0 + slot * 0.4
            parts.append(
                f'<text x="{cx:.1f}" y="{HEIGHT - _PAD_BOTTOM + 16}" text-anchor="middle" '
                f'class="tick">{escape(label)}</text>'
            )
    svg = (
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        f'direction="ltr" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'
    )
    return _figure(chart, title, svg, series)


def _axis(top: float, spell: Spell, rtl: bool) -> str:
    plot_h = HEIGHT - _PAD_TOP - _PAD_BOTTOM
    x_axis = WIDTH - _PAD_SIDE + 4 if rtl else _PAD_SIDE - 4
    anchor = "start" if rtl else "end"
    out = []
    for frac in (0.0, 0.5, 1.0):
        y = _PAD_TOP + plot_h * (1 - frac)
        value = top * frac
        shown = round(value) if float(value).is_integer() or value >= 10 else round(value, 1)
        out.append(
            f'<line x1="{_PAD_SIDE}" x2="{WIDTH - _PAD_SIDE}" y1="{y:.1f}" y2="{y:.1f}" '
            f'class="grid"/><text x="{x_axis}" y="{y + 4:.1f}" text-anchor="{anchor}" '
            f'class="tick">{escape(spell(shown))}</text>'
        )
    return "".join(out)


def heatmap(
    chart: str,
    title: str,
    rows: Sequence[tuple[str, str]],  # (key, label)
    columns: Sequence[str],
    values: Sequence[Sequence[float | None]],  # per row, per column: 0..1 or None
    percent: Callable[[float | None], str],
    *,
    rtl: bool,
    empty: str,
) -> Markup:
    """A grid of shares (0-1), one row per unit, one column per period: red late, green in time."""
    if not rows or not columns:
        return _figure(chart, title, f'<p class="muted">{escape(empty)}</p>', ())
    label_w, cell_w, cell_h, head_h = 200, 56, 22, 22
    width = label_w + cell_w * len(columns) + 8
    height = head_h + cell_h * len(rows) + 4
    slots = _x_order(len(columns), rtl)
    parts = []

    def cell_x(c: int) -> int:
        return (4 + slots[c] * cell_w) if rtl else (label_w + slots[c] * cell_w)

    for c, label in enumerate(columns):
        parts.append(
            f'<text x="{cell_x(c) + cell_w / 2:.1f}" y="15" text-anchor="middle" '
            f'class="tick">{escape(label)}</text>'
        )
    for r, (key, label) in enumerate(rows):
        y = head_h + r * cell_h
        # Anchors are physical (the svg is direction="ltr"): labels sit beside the cells.
        lx, anchor = (width - 4, "end") if rtl else (label_w - 8, "end")
        parts.append(
            f'<text x="{lx}" y="{y + 15}" text-anchor="{anchor}" class="label">'
            f"{escape(label)}</text>"
        )
        for c in range(len(columns)):
            v = values[r][c]
            fill = "#eef1f5" if v is None else _share_color(v)
            raw = "" if v is None else f"{v:.4f}"
            parts.append(
                f'<g><rect x="{cell_x(c) + 1}" y="{y + 1}" width="{cell_w - 2}" '
                f'height="{cell_h - 2}" fill="{fill}" data-chart="{escape(chart)}" '
                f'data-key="{escape(key)}:{c}" data-value="{raw}">'
                f"<title>{escape(label)} — {escape(columns[c])}: "
                f"{escape(percent(v))}</title></rect>"
                f'<text x="{cell_x(c) + cell_w / 2:.1f}" y="{y + 15}" text-anchor="middle" '
                f'class="cell">{escape(percent(v))}</text></g>'
            )
    svg = (
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
        f'direction="ltr" xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'
    )
    return _figure(chart, title, svg, ())


def _share_color(v: float) -> str:
    """Red (0) through amber to green (1)."""
    v = min(1.0, max(0.0, v))
    if v < 0.5:
        r, g, b = 230, int(120 + 140 * v), 110
    else:
        r, g, b = int(230 - 250 * (v - 0.5)), 200, int(110 + 20 * (v - 0.5))
    return f"#{r:02x}{g:02x}{b:02x}"


def _figure(chart: str, title: str, body: str, series: Sequence[Series]) -> Markup:
    legend = "".join(
        # An SVG swatch: its fill is an attribute, which the page's CSP allows
        # (inline style attributes it does not).
        f'<span class="key"><svg width="12" height="12" aria-hidden="true">'
        f'<rect width="12" height="12" fill="{s.color}"/></svg>{escape(s.label)}</span>'
        for s in series
        if len(series) > 1
    )
    return Markup(
        f'<figure class="chart" data-chart="{escape(chart)}"><figcaption>{escape(title)}'
        f"{' ' + legend if legend else ''}</figcaption>{body}</figure>"
    )

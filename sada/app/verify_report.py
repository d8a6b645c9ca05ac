"""``sada replay --verify``'s report: differences per table, counted, the first ones readable.

A difference is a row only the live store has, only the replay has, or that
both have with other values; each shown row names its table and key and the
columns that differ. Archive records and other bytes (dumped as hex) are
shown as the text they hold, cut short.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any, TextIO

from sada.app.replay import Difference
from sada.consumers.tables import STATE_TABLES

# Column names of the dump's rows (SqlStore.dump leaves out escalations.published).
COLUMNS = {
    t.name: [c.name for c in t.c if not (t.name == "escalations" and c.name == "published")]
    for t in STATE_TABLES
}

SHOWN_CHARS = 160
_HEX = frozenset("0123456789abcdef")


def print_report(diffs: Sequence[Difference], limit: int, stdout: TextIO) -> None:
    tables = Counter(d.table for d in diffs)
    summary = ", ".join(f"{t} {n}" for t, n in sorted(tables.items()))
    print(f"verify: {len(diffs)} differences ({summary})", file=stdout)
    shown: Counter[str] = Counter()
    per_table = max(1, limit // max(1, len(tables)))
    for d in diffs:
        if shown[d.table] >= per_table:
            continue
        shown[d.table] += 1
        print(f"  {d.table} {_key(d.key)}: {describe(d)}", file=stdout)
    hidden = len(diffs) - sum(shown.values())
    if hidden:
        print(f"  ... and {hidden} more (--limit N shows more)", file=stdout)


def describe(d: Difference) -> str:
    if d.replayed is None:
        return f"only in the live store: {_row(d.live)}"
    if d.live is None:
        return f"only in the replay: {_row(d.replayed)}"
    names = COLUMNS.get(d.table, [])
    changed = [
        f"{names[i] if i < len(names) else f'column {i}'}: live {_value(a)}, replayed {_value(b)}"
        for i, (a, b) in enumerate(zip(d.live, d.replayed, strict=False))
        if a != b
    ]
    return "; ".join(changed) or "rows differ in length"


def _key(key: tuple[Any, ...]) -> str:
    return "(" + ", ".join(str(v) for v in key) + ")"


def _row(row: tuple[Any, ...] | None) -> str:
    return "(" + ", ".join(_value(v) for v in row or ()) + ")"


def _value(value: Any) -> str:
    """A value as a person reads it: hex-dumped bytes as their text, long text cut short."""
    if isinstance(value, str) and len(value) > 64 and len(value) % 2 == 0 and set(value) <= _HEX:
        value = bytes.fromhex(value).decode("utf-8", "replace")
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"

"""The figures of a run, their targets, and how they are shown: a text table and JSON."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sada.app.bench.plan import BenchPlan


@dataclass(frozen=True, slots=True)
class Target:
    """A goal a figure is compared against: ``value op bound``."""

    op: str  # ">=" or "<="
    bound: float
    text: str

    def met(self, value: float) -> bool:
        return value >= self.bound if self.op == ">=" else value <= self.bound


TARGETS: Mapping[str, Target] = {
    "e2e_throughput": Target(">=", 20_000, "≥ 20,000"),
    "e2e_vs_raw": Target(">=", 0.40, "≥ 0.40"),
    "latency_p99": Target("<=", 250, "≤ 250"),
    "replay_archive": Target(">=", 50_000, "≥ 50,000"),
    "state_per_open_submission": Target("<=", 2_048, "≤ 2,048"),
    "e2e_cost_growth": Target("<=", 1.25, "≤ 1.25 (flat)"),
    "e2e_webhooks_vs_none": Target(">=", 0.90, "≥ 0.90"),
}


@dataclass(frozen=True, slots=True)
class Figure:
    id: str
    label: str
    value: float
    unit: str
    events: int | None = None  # workload size; None for the fixed-load latency figures

    @property
    def target(self) -> Target | None:
        return TARGETS.get(self.id)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "label": self.label,
            "value": self.value,
            "unit": self.unit,
            "events": self.events,
        }
        target = self.target
        if target is not None:
            out["target"] = {"op": target.op, "bound": target.bound, "met": target.met(self.value)}
        return out


@dataclass(slots=True)
class BenchReport:
    plan: BenchPlan
    started: datetime
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, id_: str, label: str, value: float, unit: str, events: int | None) -> None:
        self.figures.append(Figure(id_, label, float(value), unit, events))

    def as_json(self) -> dict[str, Any]:
        return {
            "started": self.started.isoformat(),
            "seconds": round(self.seconds, 3),
            "plan": dataclasses.asdict(self.plan),
            "environment": self.environment,
            "figures": [f.as_json() for f in self.figures],
            "details": self.details,
        }


def format_value(value: float) -> str:
    if value == 0:
        return "0"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value >= 0.01 else f"{value:.2e}"


def format_table(report: BenchReport) -> str:
    """The figures as an aligned text table: figure, events, value, unit, target."""
    rows = [("figure", "events", "value", "unit", "target")]
    for f in report.figures:
        target = f.target
        rows.append(
            (
                f.label,
                "" if f.events is None else f"{f.events:,}",
                format_value(f.value),
                f.unit,
                ""
                if target is None
                else f"{target.text} {'met' if target.met(f.value) else 'MISSED'}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for k, r in enumerate(rows):
        cells = [
            r[0].ljust(widths[0]),
            r[1].rjust(widths[1]),
            r[2].rjust(widths[2]),
            r[3].ljust(widths[3]),
            r[4],
        ]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines + _summary(report))


def _summary(report: BenchReport) -> list[str]:
    """Under the table: the workload's mix at each size, and cost per event against the smallest."""
    sizes: Mapping[int, Any] = report.details.get("sizes", {})
    lines: list[str] = []
    for n, detail in sorted(sizes.items()):
        workload = detail.get("workload") or {}
        types: Mapping[str, int] = workload.get("types") or {}
        total = sum(types.values()) or 1
        shares = ", ".join(
            f"{t.removeprefix('sada.')} {100 * c / total:.0f}%"
            for t, c in sorted(types.items(), key=lambda tc: -tc[1])
        )
        lines.append(f"mix {workload.get('mix', '?')} at {n:,} events: {shares}")
    costs = sorted((f.events, f.value) for f in report.figures if f.id == "e2e_cost" and f.events)
    if costs:
        base = costs[0][1]
        lines.append(
            "end-to-end µs/event (÷ smallest): "
            + ", ".join(f"{n:,}: {v:.0f} ({v / base:.2f}×)" for n, v in costs)
        )
    return ["", *lines] if lines else []


def timestamped_path(directory: Path, at: datetime) -> Path:
    return directory / f"bench-{at.strftime('%Y%m%dT%H%M%SZ')}.json"

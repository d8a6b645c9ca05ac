"""What the dashboard shows, read from the metrics registry, the store and the configuration.

Every number comes from the same place as ``/metrics``: the worker's metrics
registry (counters, and the gauges of the cached store snapshot), so the page
and a Prometheus scrape agree. The units' ranking, which has no metric, comes
from :func:`~sada.consumers.snapshot.unit_ranking`. The result is plain JSON
data: ``GET /api/v1/dashboard`` returns it as it is, the page renders it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, get_args

from prometheus_client import CollectorRegistry

from sada.consumers.dashboard.trends import trends
from sada.consumers.snapshot import unit_ranking
from sada.consumers.store import SqlStore
from sada.pipeline.domain.config import KINDS, Config
from sada.pipeline.domain.model import EscalationReason
from sada.pipeline.domain.rules import Rules
from sada.pipeline.domain.sla import STATUSES

RANKING_TTL_SECONDS = 15.0
ESCALATION_REASONS: tuple[EscalationReason, ...] = get_args(EscalationReason)


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
    registry: CollectorRegistry,
    config: Config,
    ranking: list[dict[str, Any]],
    totals: Mapping[str, Any] | None = None,
    trends: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The dashboard's numbers, read from ``registry`` as ``/metrics`` exports them.

    ``totals`` (:meth:`~sada.consumers.store.SqlStore.totals`) replaces the
    event and escalation counters, which start from zero with each process,
    by the store's counts, which do not; ``trends`` (:func:`.trends.trends`)
    feeds the charts.

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
        if trends is not None:  # from the store: it survives a restart
            row["first_response_mean_hours"] = trends["first_response_mean_hours"].get(kind)
            row["resolution_mean_hours"] = trends["resolution_mean_hours"].get(kind)
        else:
            row["first_response_mean_hours"] = _mean(
                s, "sada_first_response_business_hours", kind=kind
            )
            row["resolution_mean_hours"] = _mean(s, "sada_resolution_business_hours", kind=kind)
        kinds.append(row)
    clock = s.get("sada_pipeline_clock_seconds")
    clock_seconds = _number(clock[0][1]) if clock else None
    lag = [
        {"stage": labels.get("stage", ""), "topic": labels.get("topic", ""), "messages": _number(v)}
        for labels, v in s.get("sada_consumer_lag_messages", [])
    ]
    overview: dict[str, int | float] = {
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
    escalation_reasons = {
        r: _sum(s, "sada_escalations_total", reason=r) for r in ESCALATION_REASONS
    }
    escalation_levels = {k: v for k, v in _by(s, "sada_escalations_total", "level").items() if v}
    if totals is not None:
        for key in ("received", "accepted", "rejected", "late", "escalations"):
            overview[key] = totals[key]
        escalation_reasons = {
            r: totals["escalations_by_reason"].get(r, 0) for r in ESCALATION_REASONS
        }
        escalation_levels = dict(totals["escalations_by_level"])
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
        "escalations": {"reason": escalation_reasons, "level": escalation_levels},
        "rejected": rejected,
        "workers": {labels.get("stage", ""): bool(v) for labels, v in s.get("sada_worker_up", [])},
        "lag": lag,
        "kinds": kinds,
        "units": units,
        "ranking": [{**r, "name": names[r["unit_id"]]} for r in ranking],
        "timezone": config.calendar.timezone,
        **({"trends": _named(trends, config)} if trends is not None else {}),
    }


def _named(trends: Mapping[str, Any], config: Config) -> dict[str, Any]:
    units = [{**u, "name": _unit_name(config, u["unit_id"])} for u in trends.get("units", [])]
    return {**trends, "units": units}


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


class _Cached:
    """A store read, repeated at most once per ``ttl`` seconds."""

    def __init__(self, read: Callable[[], Any], ttl: float) -> None:
        self.read = read
        self.ttl = ttl
        self._lock = threading.Lock()
        self._value: Any = None
        self._taken = -float("inf")

    def __call__(self) -> Any:
        with self._lock:
            now = time.monotonic()
            if now - self._taken >= self.ttl:
                self._value = self.read()
                self._taken = now
            return self._value


class Dashboard:
    """The dashboard's data over one metrics registry, store and configuration."""

    def __init__(
        self,
        registry: CollectorRegistry,
        store: SqlStore,
        config: Config,
        *,
        ttl: float = RANKING_TTL_SECONDS,
    ) -> None:
        self.registry = registry
        self.config = config
        self.store = store
        # Its own calendar: the projector's is used from another thread.
        rules = Rules.from_config(config)
        self.ranking = _Ranking(store, rules, ttl)
        self.totals = _Cached(store.totals, min(ttl, 2.0))
        trend_rules = Rules.from_config(config)  # used under another lock
        self.trends = _Cached(lambda: trends(store, trend_rules, config.calendar.timezone), ttl)

    def data(self) -> dict[str, Any]:
        """Blocking (reads the store): call from a thread."""
        return dashboard_data(
            self.registry, self.config, self.ranking(), self.totals(), self.trends()
        )

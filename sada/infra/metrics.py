"""Sada's Prometheus metrics, all defined in one place against an injected registry.

Every label value is clamped to a closed set before it reaches
prometheus_client, so no input (a misbehaving integrator, a typo in a unit
id) can create an unbounded number of time series. Values outside a set are
exported as ``"unknown"``. No label ever carries a person or submission id.

Counters and histograms are updated by the pipeline through the methods of
:class:`Metrics`. State-derived gauges (open submissions, at-risk, overdue,
consumer lag, ...) are read at scrape time from a :class:`Snapshot` returned
by a source function, so they are always as fresh as the scrape and never
drift from the read model.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from sada import __version__
from sada.infra.gateway_metrics import GatewayMetrics
from sada.infra.metric_labels import (
    CHANNELS,
    DEFAULT_STAGES,
    DEFAULT_TOPICS,
    ESCALATION_REASONS,
    EVENT_TYPES,
    KINDS,
    LEVELS,
    REJECTION_REASONS,
    UNKNOWN,
    clamp,
    clamp_channel,
    clamp_escalation_reason,
    clamp_kind,
    clamp_level,
    clamp_rejection_reason,
    clamp_status,
    clamp_type,
)
from sada.infra.sla_metrics import SlaOutcomes
from sada.infra.webhook_metrics import WEBHOOK_HISTOGRAMS, WEBHOOK_LABELS, WebhookMetrics
from sada.pipeline.domain.reasons import Reason

# Business-hour buckets include every default SLA bound (16, 24, 40, 80, 160);
# a Metrics built with the configured SLA adds its bounds, and counts each
# first response and resolution as within or late against them
# (sada_first_responses_total, sada_resolutions_total), so SLA panels never
# hard-code hours.
BUSINESS_HOUR_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 24, 32, 40, 60, 80, 120, 160, 200)
RATING_BUCKETS: tuple[float, ...] = (1, 2, 3, 4, 5)
DECISION_LAG_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
)

LABELS: Mapping[str, frozenset[str]] = {
    "sada_events_received_total": frozenset({"type", "channel"}),
    "sada_events_accepted_total": frozenset({"type", "channel"}),
    "sada_events_rejected_total": frozenset({"type", "reason"}),
    "sada_events_duplicate_total": frozenset({"type"}),
    "sada_events_late_total": frozenset({"type"}),
    "sada_dlq_records_total": frozenset({"reason"}),
    "sada_escalations_total": frozenset({"level", "reason"}),
    "sada_first_response_business_hours": frozenset({"kind"}),
    "sada_resolution_business_hours": frozenset({"kind"}),
    "sada_first_responses_total": frozenset({"kind", "outcome"}),
    "sada_resolutions_total": frozenset({"kind", "outcome"}),
    "sada_sla_target_business_hours": frozenset({"kind", "clock"}),
    "sada_satisfaction_rating": frozenset({"unit"}),
    "sada_decision_lag_seconds": frozenset(),
    "sada_submissions_open": frozenset({"unit", "kind", "status"}),
    "sada_submissions_at_risk": frozenset({"unit"}),
    "sada_submissions_overdue": frozenset({"unit"}),
    "sada_submissions_closed": frozenset({"unit", "kind"}),
    "sada_pipeline_clock_seconds": frozenset(),
    "sada_consumer_lag_messages": frozenset({"stage", "topic"}),
    "sada_worker_up": frozenset({"stage"}),
    "sada_snapshot_errors_total": frozenset(),
    "sada_build_info": frozenset({"version"}),
    "sada_gateway_events_total": frozenset({"result"}),
} | WEBHOOK_LABELS
"""Every metric family as queried in PromQL (counters with ``_total``) and its label names."""

METRIC_NAMES: frozenset[str] = frozenset(LABELS)
HISTOGRAMS: frozenset[str] = WEBHOOK_HISTOGRAMS | {
    "sada_first_response_business_hours",
    "sada_resolution_business_hours",
    "sada_satisfaction_rating",
    "sada_decision_lag_seconds",
}


def _duration(value: float) -> float | None:
    """A duration fit to observe: finite, and never below zero (clock skew reads as zero)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(v) or math.isinf(v):
        return None
    return max(v, 0.0)


@dataclass(frozen=True)
class Snapshot:
    """State read from the pipeline at scrape time; keys are clamped when exported.

    ``open_submissions`` is keyed by (unit, kind, status: on_time|at_risk|overdue),
    ``closed_submissions`` by (unit, kind), ``consumer_lag`` by (stage, topic);
    ``pipeline_clock_seconds`` is the event clock in unix seconds, None before it starts.
    """

    open_submissions: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    at_risk: Mapping[str, int] = field(default_factory=dict)
    overdue: Mapping[str, int] = field(default_factory=dict)
    closed_submissions: Mapping[tuple[str, str], int] = field(default_factory=dict)
    pipeline_clock_seconds: float | None = None
    consumer_lag: Mapping[tuple[str, str], int] = field(default_factory=dict)
    worker_up: Mapping[str, bool] = field(default_factory=dict)


SnapshotSource = Callable[[], Snapshot]


class _SnapshotCollector:
    """Exports a :class:`Snapshot` as gauges; a failing source never fails the scrape."""

    def __init__(
        self,
        clamp_unit: Callable[[str], str],
        clamp_stage: Callable[[str], str],
        clamp_topic: Callable[[str], str],
    ) -> None:
        self._clamp_unit = clamp_unit
        self._clamp_stage = clamp_stage
        self._clamp_topic = clamp_topic
        self._source: SnapshotSource | None = None
        self._errors = 0
        self._lock = threading.Lock()

    def set_source(self, fn: SnapshotSource | None) -> None:
        self._source = fn

    def describe(self) -> Iterator[Metric]:
        yield from self._empty_families()
        yield CounterMetricFamily(
            "sada_snapshot_errors", "Scrapes whose snapshot could not be read in full."
        )

    def collect(self) -> Iterator[Metric]:
        families: list[Metric] = []
        source = self._source
        failed = 0
        if source is not None:
            try:
                snapshot = source()
            except Exception:
                # The rest of the registry still scrapes; the failure is counted below.
                failed = 1
            else:
                for build in self._builders():
                    try:
                        families.append(build(snapshot))
                    except Exception:
                        failed = 1
        with self._lock:
            self._errors += failed
            errors = self._errors
        yield from families
        yield CounterMetricFamily(
            "sada_snapshot_errors",
            "Scrapes whose snapshot could not be read in full.",
            value=errors,
        )

    def _empty_families(self) -> Iterator[Metric]:
        for name, doc, labels in _SNAPSHOT_GAUGES:
            yield GaugeMetricFamily(name, doc, labels=labels)

    def _builders(self) -> list[Callable[[Snapshot], Metric]]:
        return [
            self._open,
            self._at_risk,
            self._overdue,
            self._closed,
            self._clock,
            self._consumer_lag,
            self._worker_up,
        ]

    def _open(self, s: Snapshot) -> Metric:
        sums: dict[tuple[str, ...], float] = {}
        for (unit, kind, status), n in s.open_submissions.items():
            key = (self._clamp_unit(unit), clamp_kind(kind), clamp_status(status))
            sums[key] = sums.get(key, 0.0) + float(n)
        return _gauge(0, sums)

    def _at_risk(self, s: Snapshot) -> Metric:
        return _gauge(1, _sum_by_unit(s.at_risk, self._clamp_unit))

    def _overdue(self, s: Snapshot) -> Metric:
        return _gauge(2, _sum_by_unit(s.overdue, self._clamp_unit))

    def _closed(self, s: Snapshot) -> Metric:
        sums: dict[tuple[str, ...], float] = {}
        for (unit, kind), n in s.closed_submissions.items():
            key = (self._clamp_unit(unit), clamp_kind(kind))
            sums[key] = sums.get(key, 0.0) + float(n)
        return _gauge(3, sums)

    def _clock(self, s: Snapshot) -> Metric:
        values: dict[tuple[str, ...], float] = {}
        if s.pipeline_clock_seconds is not None:
            values[()] = float(s.pipeline_clock_seconds)
        return _gauge(4, values)

    def _consumer_lag(self, s: Snapshot) -> Metric:
        sums: dict[tuple[str, ...], float] = {}
        for (stage, topic), n in s.consumer_lag.items():
            key = (self._clamp_stage(stage), self._clamp_topic(topic))
            sums[key] = sums.get(key, 0.0) + float(n)
        return _gauge(5, sums)

    def _worker_up(self, s: Snapshot) -> Metric:
        # Several unknown stages share one series: it is up only if all of them are.
        ups: dict[tuple[str, ...], float] = {}
        for stage, up in s.worker_up.items():
            key = (self._clamp_stage(stage),)
            ups[key] = min(ups.get(key, 1.0), 1.0 if up else 0.0)
        return _gauge(6, ups)


_SNAPSHOT_GAUGES: tuple[tuple[str, str, list[str]], ...] = (
    (
        "sada_submissions_open",
        "Open submissions by current unit, kind and deadline status.",
        ["unit", "kind", "status"],
    ),
    ("sada_submissions_at_risk", "Open submissions past 80% of a deadline.", ["unit"]),
    ("sada_submissions_overdue", "Open submissions past a deadline.", ["unit"]),
    ("sada_submissions_closed", "Closed submissions by last unit and kind.", ["unit", "kind"]),
    ("sada_pipeline_clock_seconds", "The pipeline's event-time clock, unix seconds.", []),
    (
        "sada_consumer_lag_messages",
        "Messages not yet consumed, by pipeline stage and topic.",
        ["stage", "topic"],
    ),
    ("sada_worker_up", "1 if the pipeline stage is running, else 0.", ["stage"]),
)


def _gauge(index: int, values: Mapping[tuple[str, ...], float]) -> Metric:
    name, doc, labels = _SNAPSHOT_GAUGES[index]
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def _sum_by_unit(
    counts: Mapping[str, int], clamp_unit: Callable[[str], str]
) -> dict[tuple[str, ...], float]:
    sums: dict[tuple[str, ...], float] = {}
    for unit, n in counts.items():
        key = (clamp_unit(unit),)
        sums[key] = sums.get(key, 0.0) + float(n)
    return sums


class Metrics:
    """All of Sada's metrics, registered on ``registry``; label values are clamped here.

    ``units`` are the configured unit ids (any other unit is exported as
    ``"unknown"``); ``stages`` and ``topics`` bound the labels of the consumer
    lag and worker gauges the same way.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        units: Iterable[str],
        *,
        stages: Iterable[str] = DEFAULT_STAGES,
        topics: Iterable[str] = DEFAULT_TOPICS,
        version: str = __version__,
        sla: Mapping[str, Any] | None = None,
    ) -> None:
        """``sla``: per kind, the configured hours (``first_response_hours``,
        ``resolution_hours``, as :class:`~sada.pipeline.domain.config.SlaHours`)."""
        self.registry = registry
        self.sla = SlaOutcomes(registry, sla)
        hour_buckets = self.sla.buckets(BUSINESS_HOUR_BUCKETS)
        self.units: frozenset[str] = frozenset(units)
        self.stages: frozenset[str] = frozenset(stages)
        self.topics: frozenset[str] = frozenset(topics)

        self._received = Counter(
            "sada_events_received",
            "Input events read, by type and channel.",
            ["type", "channel"],
            registry=registry,
        )
        self._accepted = Counter(
            "sada_events_accepted",
            "Input events that passed validation and took effect.",
            ["type", "channel"],
            registry=registry,
        )
        self._rejected = Counter(
            "sada_events_rejected",
            "Input events rejected, by type and reason.",
            ["type", "reason"],
            registry=registry,
        )
        self._duplicate = Counter(
            "sada_events_duplicate",
            "Redelivered events (same source and id) absorbed without effect.",
            ["type"],
            registry=registry,
        )
        self._late = Counter(
            "sada_events_late",
            "Events that arrived after the pipeline clock had passed their time.",
            ["type"],
            registry=registry,
        )
        self._dlq = Counter(
            "sada_dlq_records",
            "Records written to sada.dlq, by reason.",
            ["reason"],
            registry=registry,
        )
        self._escalations = Counter(
            "sada_escalations",
            "Escalations, by level reached and reason.",
            ["level", "reason"],
            registry=registry,
        )
        self._first_response = Histogram(
            "sada_first_response_business_hours",
            "Business hours from arrival at a unit to its first response.",
            ["kind"],
            buckets=hour_buckets,
            registry=registry,
        )
        self._resolution = Histogram(
            "sada_resolution_business_hours",
            "Business hours from arrival at a unit to closure.",
            ["kind"],
            buckets=hour_buckets,
            registry=registry,
        )
        self._satisfaction = Histogram(
            "sada_satisfaction_rating",
            "Satisfaction ratings (1-5), by the unit that closed the submission.",
            ["unit"],
            buckets=RATING_BUCKETS,
            registry=registry,
        )
        self._decision_lag = Histogram(
            "sada_decision_lag_seconds",
            "Wall time from an event's arrival at ingress to its decision being applied.",
            buckets=DECISION_LAG_BUCKETS,
            registry=registry,
        )
        self._build_info = Gauge(
            "sada_build_info",
            "Always 1; the version label names the build.",
            ["version"],
            registry=registry,
        )
        self._build_info.labels(version=version).set(1)
        self.webhooks = WebhookMetrics(registry)
        self.gateway = GatewayMetrics(registry)

        self._snapshot = _SnapshotCollector(self.clamp_unit, self.clamp_stage, self.clamp_topic)
        registry.register(self._snapshot)
        self._initialise_series()

    def _initialise_series(self) -> None:
        # Series that exist from the start read as 0 rather than absent, so
        # rate() and increase() in alerts see the first increment.
        types = EVENT_TYPES | {UNKNOWN}
        channels = CHANNELS | {UNKNOWN}
        rejection_reasons = REJECTION_REASONS | {UNKNOWN}
        kinds = KINDS | {UNKNOWN}
        for t in types:
            self._duplicate.labels(type=t)
            self._late.labels(type=t)
            for c in channels:
                self._received.labels(type=t, channel=c)
                self._accepted.labels(type=t, channel=c)
            for r in rejection_reasons:
                self._rejected.labels(type=t, reason=r)
        for r in rejection_reasons:
            self._dlq.labels(reason=r)
        for level in LEVELS - {"0"}:
            for r in ESCALATION_REASONS:
                self._escalations.labels(level=level, reason=r)
        for k in kinds:
            self._first_response.labels(kind=k)
            self._resolution.labels(kind=k)
        for u in self.units:
            self._satisfaction.labels(unit=u)

    # Label clamps that depend on configuration.

    def clamp_unit(self, unit: str | None) -> str:
        return clamp(unit, self.units)

    def clamp_stage(self, stage: str | None) -> str:
        return clamp(stage, self.stages)

    def clamp_topic(self, topic: str | None) -> str:
        return clamp(topic, self.topics)

    # Ingestion.

    # ``amount``: a stage counts a whole batch's events of one label set at once.

    def event_received(
        self, type_: str | None, channel: str | None = None, amount: int = 1
    ) -> None:
        self._received.labels(type=clamp_type(type_), channel=clamp_channel(channel)).inc(amount)

    def event_accepted(
        self, type_: str | None, channel: str | None = None, amount: int = 1
    ) -> None:
        self._accepted.labels(type=clamp_type(type_), channel=clamp_channel(channel)).inc(amount)

    def event_rejected(self, type_: str | None, reason: Reason | str | None) -> None:
        self._rejected.labels(type=clamp_type(type_), reason=clamp_rejection_reason(reason)).inc()

    def event_duplicate(self, type_: str | None) -> None:
        self._duplicate.labels(type=clamp_type(type_)).inc()

    def event_late(self, type_: str | None, amount: int = 1) -> None:
        self._late.labels(type=clamp_type(type_)).inc(amount)

    def dlq_record(self, reason: Reason | str | None) -> None:
        self._dlq.labels(reason=clamp_rejection_reason(reason)).inc()

    # Decisions and SLA.

    def escalated(self, to_level: int, reason: str | None) -> None:
        self._escalations.labels(
            level=clamp_level(to_level), reason=clamp_escalation_reason(reason)
        ).inc()

    def first_response(self, kind: str | None, business_hours: float) -> None:
        hours = _duration(business_hours)
        if hours is not None:
            k = clamp_kind(kind)
            self._first_response.labels(kind=k).observe(hours)
            self.sla.first_response(k, hours)

    def resolved(self, kind: str | None, business_hours: float) -> None:
        hours = _duration(business_hours)
        if hours is not None:
            k = clamp_kind(kind)
            self._resolution.labels(kind=k).observe(hours)
            self.sla.resolved(k, hours)

    def satisfaction(self, unit: str | None, rating: int) -> None:
        """Record a 1-5 rating; anything else is not a rating and is not observed."""
        if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
            return
        self._satisfaction.labels(unit=self.clamp_unit(unit)).observe(rating)

    def decision_lag(self, seconds: float) -> None:
        value = _duration(seconds)
        if value is not None:
            self._decision_lag.observe(value)

    # Scrape-time state.

    def set_snapshot_source(self, fn: Callable[[], Snapshot] | None) -> None:
        """Read gauges from ``fn()`` at every scrape; ``None`` stops exporting them."""
        self._snapshot.set_source(fn)

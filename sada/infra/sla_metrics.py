"""SLA compliance as metrics, against the configured SLA: never hours written into a panel.

:class:`SlaOutcomes` counts each first response and resolution as ``within``
or ``late`` against its kind's configured hours (``sada_first_responses_total``,
``sada_resolutions_total``), exports the configured hours themselves
(``sada_sla_target_business_hours``), and gives the histogram buckets that
include every configured bound. :class:`~sada.infra.metrics.Metrics` holds
one; the metric names and labels are listed with the others in
:data:`sada.infra.metrics.LABELS`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from sada.infra.metric_labels import clamp_kind

OUTCOMES = ("within", "late")


class SlaOutcomes:
    """Within/late counters and SLA targets; ``sla``: per kind, objects with
    ``first_response_hours`` and ``resolution_hours``
    (:class:`~sada.pipeline.domain.config.SlaHours`)."""

    def __init__(self, registry: CollectorRegistry, sla: Mapping[str, Any] | None) -> None:
        self.hours: dict[str, tuple[float, float]] = {
            clamp_kind(k): (float(v.first_response_hours), float(v.resolution_hours))
            for k, v in (sla or {}).items()
        }
        self._first = Counter(
            "sada_first_responses",
            "First responses, by kind and outcome (within or late against the configured SLA).",
            ["kind", "outcome"],
            registry=registry,
        )
        self._resolution = Counter(
            "sada_resolutions",
            "Resolutions, by kind and outcome (within or late against the configured SLA).",
            ["kind", "outcome"],
            registry=registry,
        )
        target = Gauge(
            "sada_sla_target_business_hours",
            "The configured SLA, in business hours, by kind and clock.",
            ["kind", "clock"],
            registry=registry,
        )
        for kind, (first_hours, resolution_hours) in sorted(self.hours.items()):
            target.labels(kind=kind, clock="first_response").set(first_hours)
            target.labels(kind=kind, clock="resolution").set(resolution_hours)
            for outcome in OUTCOMES:  # present from the start: increase() sees the first
                self._first.labels(kind=kind, outcome=outcome)
                self._resolution.labels(kind=kind, outcome=outcome)

    def buckets(self, base: Iterable[float]) -> tuple[float, ...]:
        """``base`` with every configured bound added, so a bucket edge is each SLA."""
        return tuple(sorted(set(base) | {h for pair in self.hours.values() for h in pair}))

    def first_response(self, kind: str, hours: float) -> None:
        if kind in self.hours:
            outcome = "within" if hours <= self.hours[kind][0] else "late"
            self._first.labels(kind=kind, outcome=outcome).inc()

    def resolved(self, kind: str, hours: float) -> None:
        if kind in self.hours:
            outcome = "within" if hours <= self.hours[kind][1] else "late"
            self._resolution.labels(kind=kind, outcome=outcome).inc()

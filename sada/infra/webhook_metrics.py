"""The webhook delivery metrics, per endpoint: part of :class:`~sada.infra.metrics.Metrics`.

Endpoint ids come from the configuration (``[[webhooks]]``), so the label is
bounded like the unit label: any other value is exported as ``"unknown"``.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sada.infra.metric_labels import UNKNOWN, clamp

WEBHOOK_LABELS: dict[str, frozenset[str]] = {
    "sada_webhook_delivered_total": frozenset({"endpoint"}),
    "sada_webhook_failed_attempts_total": frozenset({"endpoint"}),
    "sada_webhook_attempt_seconds": frozenset({"endpoint"}),
    "sada_webhook_oldest_undelivered_seconds": frozenset({"endpoint"}),
}
WEBHOOK_HISTOGRAMS: frozenset[str] = frozenset({"sada_webhook_attempt_seconds"})
ATTEMPT_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.endpoints: frozenset[str] = frozenset()
        self._delivered = Counter(
            "sada_webhook_delivered", "Webhook deliveries answered 2xx.", ["endpoint"],
            registry=registry,
        )  # fmt: skip
        self._failed = Counter(
            "sada_webhook_failed_attempts",
            "Webhook attempts that failed (non-2xx, timeout, connection error).",
            ["endpoint"],
            registry=registry,
        )
        self._latency = Histogram(
            "sada_webhook_attempt_seconds", "Wall time of one webhook attempt.", ["endpoint"],
            buckets=ATTEMPT_BUCKETS, registry=registry,
        )  # fmt: skip
        self._oldest = Gauge(
            "sada_webhook_oldest_undelivered_seconds",
            "Age of the oldest delivery not yet made (0 when none waits).",
            ["endpoint"],
            registry=registry,
        )

        self.set_endpoints(())

    def set_endpoints(self, ids: Iterable[str]) -> None:
        self.endpoints = frozenset(ids)
        for e in self.endpoints | {UNKNOWN}:
            self._delivered.labels(endpoint=e)
            self._failed.labels(endpoint=e)
            self._latency.labels(endpoint=e)
            self._oldest.labels(endpoint=e).set(0)

    def delivered(self, endpoint: str, seconds: float) -> None:
        e = clamp(endpoint, self.endpoints)
        self._delivered.labels(endpoint=e).inc()
        self._latency.labels(endpoint=e).observe(max(0.0, seconds))

    def failed(self, endpoint: str, seconds: float) -> None:
        e = clamp(endpoint, self.endpoints)
        self._failed.labels(endpoint=e).inc()
        self._latency.labels(endpoint=e).observe(max(0.0, seconds))

    def oldest_undelivered(self, endpoint: str, seconds: float) -> None:
        self._oldest.labels(endpoint=clamp(endpoint, self.endpoints)).set(max(0.0, seconds))

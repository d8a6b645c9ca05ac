"""The HTTP gateway's metric: part of :class:`~sada.infra.metrics.Metrics`.

``sada_gateway_events_total{result}`` counts each event of every request the
gateway answered 202, once, by the result it was given (the closed set
:data:`~sada.pipeline.domain.vocabulary.GATEWAY_RESULTS`), so the four series
add up to the events received in those requests. A request refused as a whole
(401, 403, 413, 429, 400 for the body, 503) is not counted: none of its events
got a result, and the client sends them again.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from sada.infra.metric_labels import GATEWAY_RESULTS, clamp


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self._events = Counter(
            "sada_gateway_events",
            "Events of the gateway's 202 answers, by result "
            "(accepted, duplicate, pending, rejected).",
            ["result"],
            registry=registry,
        )
        for result in sorted(GATEWAY_RESULTS):
            self._events.labels(result=result)

    def answered(self, result: str, count: int = 1) -> None:
        """``count`` events answered ``result``."""
        if count > 0:
            self._events.labels(result=clamp(result, GATEWAY_RESULTS)).inc(count)

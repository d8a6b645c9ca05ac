"""Sada's metrics as an operator scrapes them: names, bounded labels, clamping, the snapshot."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator, Mapping

import pytest
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from sada.infra.metrics import LABELS, METRIC_NAMES, Metrics, Snapshot
from sada.pipeline.domain.config import DEFAULT_SLA
from sada.pipeline.domain.reasons import Reason

# The contract with dashboards and alerts: every family (as named in PromQL)
# and its label names. A metric added without being listed here fails.
EXPECTED: dict[str, frozenset[str]] = {
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
    "sada_webhook_delivered_total": frozenset({"endpoint"}),
    "sada_webhook_failed_attempts_total": frozenset({"endpoint"}),
    "sada_webhook_attempt_seconds": frozenset({"endpoint"}),
    "sada_webhook_oldest_undelivered_seconds": frozenset({"endpoint"}),
    "sada_gateway_events_total": frozenset({"result"}),
}
BOUNDED_LABELS = frozenset(
    {
        *("type", "channel", "reason", "unit", "kind", "level", "status", "stage", "topic"),
        *("version", "outcome", "clock", "endpoint", "result"),
    }
)

UNITS = ("univ", "univ.hospital-a", "univ.faculty-med")
FULL_SNAPSHOT = Snapshot(
    open_submissions={
        ("univ.hospital-a", "complaint", "overdue"): 3,
        ("univ.hospital-a", "question", "on_time"): 5,
        ("univ", "suggestion", "at_risk"): 1,
    },
    at_risk={"univ": 1, "univ.faculty-med": 2},
    overdue={"univ.hospital-a": 3},
    closed_submissions={("univ.faculty-med", "criticism"): 7},
    pipeline_clock_seconds=1_767_225_600.0,
    consumer_lag={("projector", "sada.votes"): 42},
    worker_up={"projector": True, "ingress": False},
)


def scrape(registry: CollectorRegistry) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """Family name (PromQL spelling) -> its samples, read from the text format."""
    text = generate_latest(registry).decode()
    return _families(text)


def _families(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    parsed = list(text_string_to_metric_families(text))
    # prometheus_client adds a "<family>_created" timestamp gauge beside each counter
    # and histogram unless PROMETHEUS_DISABLE_CREATED_SERIES is set; it is not a Sada metric.
    timestamped = {f.name + "_created" for f in parsed if f.type in ("counter", "histogram")}
    out: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for family in parsed:
        if family.name in timestamped:
            continue
        name = family.name + "_total" if family.type == "counter" else family.name
        out[name] = [(s.name, dict(s.labels), s.value) for s in family.samples]
    return out


def value(
    families: Mapping[str, list[tuple[str, dict[str, str], float]]],
    sample: str,
    **labels: str,
) -> float | None:
    family = sample.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
    for name, got, v in families.get(family, []):
        if name == sample and got == labels:
            return v
    return None


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry, UNITS, sla=DEFAULT_SLA)


def exercise(m: Metrics) -> None:
    m.event_received("sada.vote.cast", "telegram")
    m.event_accepted("sada.vote.cast", "telegram")
    m.event_rejected("sada.submission.created", Reason.UNKNOWN_UNIT)
    m.event_duplicate("sada.vote.cast")
    m.event_late("sada.response.posted")
    m.dlq_record(Reason.SCHEMA_VIOLATION)
    m.escalated(1, "support_threshold")
    m.first_response("complaint", 3.5)
    m.resolved("complaint", 70.0)
    m.satisfaction("univ", 4)
    m.decision_lag(0.2)
    m.set_snapshot_source(lambda: FULL_SNAPSHOT)


def test_every_family_and_its_labels_are_exactly_the_listed_ones(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    exercise(metrics)
    families = scrape(registry)

    assert set(families) == set(EXPECTED)
    assert set(EXPECTED) == METRIC_NAMES
    assert dict(LABELS) == EXPECTED
    for name, samples in families.items():
        assert samples, f"{name} exports no sample"
        for _sample, labels, _v in samples:
            keys = set(labels) - {"le"}
            assert keys == EXPECTED[name], f"{name} has labels {sorted(keys)}"
            assert keys <= BOUNDED_LABELS


def test_no_label_value_comes_from_outside_its_bounded_set(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    person = "author-5f2c9a"
    submission = "sub-01JD4Z2Q7Y"
    metrics.event_received(submission, person)
    metrics.event_accepted("sada.vote.cast", "carrier-pigeon")
    metrics.event_rejected("sada.vote.cast", "because I said so")
    metrics.event_duplicate(person)
    metrics.event_late(None)
    metrics.dlq_record("some new reason")
    metrics.escalated(2, submission)
    metrics.first_response("praise", 2.0)
    metrics.resolved(None, 2.0)
    metrics.satisfaction(person, 5)
    metrics.gateway.answered(person)
    families = scrape(registry)

    values = {
        v
        for samples in families.values()
        for _name, labels, _v in samples
        for k, v in labels.items()
        if k != "le"
    }
    assert person not in values and submission not in values
    assert "carrier-pigeon" not in values and "praise" not in values
    assert value(
        families, "sada_events_received_total", type="unknown", channel="unknown"
    ) == pytest.approx(1)
    assert value(
        families, "sada_events_rejected_total", type="sada.vote.cast", reason="unknown"
    ) == pytest.approx(1)
    assert value(families, "sada_dlq_records_total", reason="unknown") == pytest.approx(1)
    assert value(families, "sada_gateway_events_total", result="unknown") == pytest.approx(1)
    assert value(families, "sada_escalations_total", level="2", reason="unknown") == pytest.approx(
        1
    )


def test_an_unknown_unit_is_exported_as_unknown(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.satisfaction("univ.not-configured", 2)
    metrics.satisfaction("univ.hospital-a", 5)
    families = scrape(registry)

    assert value(families, "sada_satisfaction_rating_count", unit="unknown") == pytest.approx(1)
    assert value(families, "sada_satisfaction_rating_sum", unit="univ.hospital-a") == pytest.approx(
        5
    )
    units = {labels["unit"] for _n, labels, _v in families["sada_satisfaction_rating"]}
    assert units == {*UNITS, "unknown"}


def test_levels_beyond_six_share_one_series(registry: CollectorRegistry, metrics: Metrics) -> None:
    for level in (1, 5, 6, 9, 40):
        metrics.escalated(level, "resolution_overdue")
    families = scrape(registry)

    def count(level: str) -> float | None:
        return value(families, "sada_escalations_total", level=level, reason="resolution_overdue")

    assert count("1") == pytest.approx(1)
    assert count("5") == pytest.approx(1)
    assert count("6+") == pytest.approx(3)
    assert count("9") is None and count("40") is None and count("6") is None


def test_ratings_outside_one_to_five_are_not_observed(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    for rating in (0, 6, -1, 3):
        metrics.satisfaction("univ", rating)
    families = scrape(registry)
    assert value(families, "sada_satisfaction_rating_count", unit="univ") == pytest.approx(1)
    assert value(families, "sada_satisfaction_rating_sum", unit="univ") == pytest.approx(3)


def test_business_hours_land_in_buckets_that_match_the_sla(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    # A complaint answered in 15.5 business hours met its 16-hour first-response SLA;
    # one answered in 17 did not. The le="16" bucket tells them apart.
    metrics.first_response("complaint", 15.5)
    metrics.first_response("complaint", 17.0)
    metrics.resolved("suggestion", 150.0)
    metrics.resolved("suggestion", 199.0)
    families = scrape(registry)

    fr = "sada_first_response_business_hours_bucket"
    assert value(families, fr, kind="complaint", le="16.0") == pytest.approx(1)
    assert value(families, fr, kind="complaint", le="24.0") == pytest.approx(2)
    res = "sada_resolution_business_hours_bucket"
    assert value(families, res, kind="suggestion", le="160.0") == pytest.approx(1)
    assert value(families, res, kind="suggestion", le="200.0") == pytest.approx(2)


def test_decision_lag_is_a_histogram_of_seconds(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    for seconds in (0.004, 0.3, 45.0):
        metrics.decision_lag(seconds)
    metrics.decision_lag(float("nan"))
    families = scrape(registry)
    assert value(families, "sada_decision_lag_seconds_count") == pytest.approx(3)
    assert value(families, "sada_decision_lag_seconds_bucket", le="0.5") == pytest.approx(2)
    assert value(families, "sada_decision_lag_seconds_bucket", le="60.0") == pytest.approx(3)


def test_the_global_default_registry_is_left_alone() -> None:
    from prometheus_client import REGISTRY

    before = {f.name for f in REGISTRY.collect()}
    Metrics(CollectorRegistry(), UNITS).event_received("sada.vote.cast", "web")
    after = {f.name for f in REGISTRY.collect()}
    assert not any(name.startswith("sada_") for name in after - before)


def test_the_snapshot_is_exported_with_its_values(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.set_snapshot_source(lambda: FULL_SNAPSHOT)
    families = scrape(registry)

    open_ = "sada_submissions_open"
    assert value(
        families, open_, unit="univ.hospital-a", kind="complaint", status="overdue"
    ) == pytest.approx(3)
    assert value(
        families, open_, unit="univ.hospital-a", kind="question", status="on_time"
    ) == pytest.approx(5)
    assert value(families, open_, unit="univ", kind="suggestion", status="at_risk") == 1
    assert value(families, "sada_submissions_at_risk", unit="univ.faculty-med") == 2
    assert value(families, "sada_submissions_overdue", unit="univ.hospital-a") == 3
    assert (
        value(families, "sada_submissions_closed", unit="univ.faculty-med", kind="criticism") == 7
    )
    assert value(families, "sada_pipeline_clock_seconds") == pytest.approx(1_767_225_600.0)
    assert (
        value(families, "sada_consumer_lag_messages", stage="projector", topic="sada.votes") == 42
    )
    assert value(families, "sada_worker_up", stage="projector") == 1
    assert value(families, "sada_worker_up", stage="ingress") == 0
    assert value(families, "sada_snapshot_errors_total") == 0


def test_snapshot_keys_outside_the_bounded_sets_are_merged_as_unknown(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    metrics.set_snapshot_source(
        lambda: Snapshot(
            at_risk={"univ.gone-a": 2, "univ.gone-b": 3, "univ": 1},
            consumer_lag={("mystery", "other.topic"): 5, ("projector", "sada.votes"): 1},
            worker_up={"stage-x": True, "stage-y": False},
        )
    )
    families = scrape(registry)
    assert value(families, "sada_submissions_at_risk", unit="unknown") == 5
    assert value(families, "sada_submissions_at_risk", unit="univ") == 1
    assert value(families, "sada_consumer_lag_messages", stage="unknown", topic="unknown") == 5
    # Two unknown stages share one series, and it reads as down if either is.
    assert value(families, "sada_worker_up", stage="unknown") == 0


def test_a_raising_snapshot_source_does_not_break_the_scrape(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    calls = 0

    def flaky() -> Snapshot:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("read model unavailable")
        return FULL_SNAPSHOT

    metrics.event_received("sada.vote.cast", "web")
    metrics.set_snapshot_source(flaky)

    families = scrape(registry)
    assert value(families, "sada_snapshot_errors_total") == 1
    assert value(
        families, "sada_events_received_total", type="sada.vote.cast", channel="web"
    ) == pytest.approx(1)
    assert "sada_submissions_open" not in families
    assert value(families, "sada_build_info", version="0.1.0") == 1

    families = scrape(registry)
    assert value(families, "sada_snapshot_errors_total") == 1
    assert value(families, "sada_submissions_overdue", unit="univ.hospital-a") == 3


def test_a_malformed_snapshot_field_loses_only_that_family(
    registry: CollectorRegistry, metrics: Metrics
) -> None:
    bad = Snapshot(
        overdue={"univ": "many"},  # type: ignore[dict-item]
        at_risk={"univ": 4},
        worker_up={"projector": True},
    )
    metrics.set_snapshot_source(lambda: bad)
    families = scrape(registry)
    assert "sada_submissions_overdue" not in families
    assert value(families, "sada_submissions_at_risk", unit="univ") == 4
    assert value(families, "sada_worker_up", stage="projector") == 1
    assert value(families, "sada_snapshot_errors_total") == 1


@pytest.fixture
def http_metrics(registry: CollectorRegistry, metrics: Metrics) -> Iterator[str]:
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_metrics_scraped_over_real_http(http_metrics: str, metrics: Metrics) -> None:
    exercise(metrics)
    metrics.escalated(7, "first_response_overdue")
    with urllib.request.urlopen(http_metrics, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        body = response.read().decode()
    families = _families(body)

    assert set(families) == set(EXPECTED)
    assert value(
        families, "sada_escalations_total", level="6+", reason="first_response_overdue"
    ) == pytest.approx(1)
    assert value(families, "sada_submissions_overdue", unit="univ.hospital-a") == 3
    assert value(
        families, "sada_events_accepted_total", type="sada.vote.cast", channel="telegram"
    ) == pytest.approx(1)

"""The alert rules against what Sada's exporter really writes, absent series included.

Two hours of a worker's life are played minute by minute through the real
:class:`~sada.infra.metrics.Metrics` (counters incremented as the stages do,
gauges from a :class:`~sada.infra.metrics.Snapshot` shaped as
:func:`~sada.consumers.snapshot.build_snapshot` shapes it: a unit with nothing
at risk or overdue has no entry, so no series). Each minute's ``/metrics``
text is parsed back into samples; a series missing from a scrape is a gap
(``_``) in promtool's input. promtool then evaluates ``alerts.yml`` over them
and the test reads which alerts fire (the ``ALERTS`` series) at chosen minutes.

A second test changes ``[sla.complaint]`` and checks that the within/late
counters and the histogram's buckets follow the configuration.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import queue_support
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from queue_support import OpenStore, populate

from sada.consumers.snapshot import build_snapshot
from sada.infra.metrics import Metrics, Snapshot
from sada.pipeline.domain.config import Config, SlaHours, load_config
from sada.pipeline.domain.rules import Rules

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
MINUTES = 121
CLOCK0 = 1_767_000_000.0
FAMILIES = (
    "sada_submissions_at_risk",
    "sada_submissions_overdue",
    "sada_dlq_records_total",
    "sada_consumer_lag_messages",
    "sada_pipeline_clock_seconds",
    "sada_escalations_total",
    "sada_decision_lag_seconds_bucket",
)

open_store = queue_support.open_store
config = queue_support.config


def snapshot_at(minute: int) -> Snapshot:
    """A worker whose food unit goes from none at risk to 6 at minute 60, with one overdue
    submission at the root from minute 10, far behind on the log, whose clock stops at 60."""
    at_risk = {"univ.hospital-a": 2}
    if minute >= 60:
        at_risk["univ.food"] = 6
    overdue = {"univ": 1} if minute >= 10 else {}
    return Snapshot(
        at_risk=at_risk,
        overdue=overdue,
        pipeline_clock_seconds=CLOCK0 + 60 * min(minute, 60),
        consumer_lag={("projector", "sada.log"): 50_000},
        worker_up={"ingress": True, "projector": True},
    )


def scrape(registry: CollectorRegistry) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            if s.name in FAMILIES:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}"] = float(s.value)
    return out


def exporter_series() -> dict[str, list[float | None]]:
    registry = CollectorRegistry()
    metrics = Metrics(registry, load_config().units.keys())
    minute = 0
    metrics.set_snapshot_source(lambda: snapshot_at(minute))
    series: dict[str, list[float | None]] = {}
    for minute in range(MINUTES):  # read by the snapshot source
        for _ in range(2):
            metrics.dlq_record("schema_violation")
        for name, value in scrape(registry).items():
            series.setdefault(name, [None] * MINUTES)[minute] = value
    return series


def values(samples: list[float | None]) -> str:
    return " ".join("_" if v is None else repr(v) for v in samples)


def firing(alert: str, severity: str = "warning", **labels: str) -> dict[str, Any]:
    every = {"alertname": alert, "alertstate": "firing", "severity": severity, **labels}
    return {
        "labels": "ALERTS{" + ",".join(f'{k}="{v}"' for k, v in sorted(every.items())) + "}",
        "value": 1,
    }


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: apt-get install -y prometheus", pytrace=False)
    return path


def test_alerts_fire_and_stay_quiet_on_the_exporters_real_series(tmp_path: Path) -> None:
    series = exporter_series()
    food = 'sada_submissions_at_risk{unit="univ.food"}'
    assert series[food][:60] == [None] * 60, "a unit with nothing at risk has no series"
    assert series[food][60:] == [6.0] * (MINUTES - 60)
    assert not any(k.startswith('sada_submissions_overdue{unit="univ.food"') for k in series)

    def check(minute: int, alert: str, expected: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "expr": f'ALERTS{{alertname="{alert}",alertstate="firing"}}',
            "eval_time": f"{minute}m",
            "exp_samples": expected,
        }

    lag = {"stage": "projector", "topic": "sada.log"}
    checks = [
        check(75, "SadaAtRiskGrowing", []),  # growing, not yet for 30 minutes
        check(100, "SadaAtRiskGrowing", [firing("SadaAtRiskGrowing", unit="univ.food")]),
        check(20, "SadaSubmissionsOverdue", []),
        check(40, "SadaSubmissionsOverdue", [firing("SadaSubmissionsOverdue", unit="univ")]),
        check(50, "SadaPipelineClockStalled", []),
        check(100, "SadaPipelineClockStalled", [firing("SadaPipelineClockStalled", "critical")]),
        check(10, "SadaDlqGrowing", []),
        check(40, "SadaDlqGrowing", [firing("SadaDlqGrowing", reason="schema_violation")]),
        check(5, "SadaPipelineLagHigh", []),
        check(30, "SadaPipelineLagHigh", [firing("SadaPipelineLagHigh", **lag)]),
    ]
    tests = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": "the exporter's series over two hours",
                "interval": "1m",
                "input_series": [
                    {"series": name, "values": values(samples)}
                    for name, samples in sorted(series.items())
                ],
                "promql_expr_test": checks,
            }
        ],
    }
    path = tmp_path / "exporter_test.yml"
    path.write_text(yaml.safe_dump(tests, allow_unicode=True), encoding="utf-8")
    result = subprocess.run(
        [promtool(), "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_store_snapshot_omits_units_with_nothing_at_risk(
    open_store: OpenStore, config: Config
) -> None:
    # What exporter_series assumes: units at zero have no entry, so no series.
    store = open_store("sqlite")
    populate(store, config)
    snap = build_snapshot(store, Rules.from_config(config), None)
    assert snap.at_risk == {"univ.food": 1}
    assert snap.overdue == {"univ": 1, "univ.fac-medicine.anatomy": 1, "univ.monitoring": 1}


def _compliance(cfg: Config) -> tuple[dict[str, float], set[str]]:
    registry = CollectorRegistry()
    metrics = Metrics(registry, cfg.units.keys(), sla=cfg.sla)
    for hours in (6.0, 10.0, 12.0, 20.0):
        metrics.first_response("complaint", hours)
    metrics.resolved("complaint", 70.0)
    outcomes: dict[str, float] = {}
    buckets: set[str] = set()
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            counted = s.name in ("sada_first_responses_total", "sada_resolutions_total")
            if counted and s.labels["kind"] == "complaint":
                outcomes[f"{s.name}:{s.labels['outcome']}"] = s.value
            if s.name == "sada_first_response_business_hours_bucket":
                buckets.add(s.labels["le"])
            if s.name == "sada_sla_target_business_hours" and s.labels["kind"] == "complaint":
                outcomes[f"target:{s.labels['clock']}"] = s.value
    return outcomes, buckets


def test_sla_compliance_follows_the_configured_sla() -> None:
    default = load_config()
    outcomes, buckets = _compliance(default)
    assert outcomes == {
        "sada_first_responses_total:within": 3.0,  # 6, 10 and 12 within 16 business hours
        "sada_first_responses_total:late": 1.0,
        "sada_resolutions_total:within": 1.0,
        "sada_resolutions_total:late": 0.0,
        "target:first_response": 16.0,
        "target:resolution": 80.0,
    }
    stricter = Config(
        calendar=default.calendar,
        ladder=default.ladder,
        sla={**default.sla, "complaint": SlaHours(first_response_hours=9, resolution_hours=60)},
        integrators=default.integrators,
        units=default.units,
    )
    outcomes, buckets = _compliance(stricter)
    assert outcomes == {
        "sada_first_responses_total:within": 1.0,  # only the 6-hour one
        "sada_first_responses_total:late": 3.0,
        "sada_resolutions_total:within": 0.0,
        "sada_resolutions_total:late": 1.0,
        "target:first_response": 9.0,
        "target:resolution": 60.0,
    }
    assert "9.0" in buckets  # a configured bound is a bucket too

"""The operations kit as an operator deploys it: alert rules, dashboard, compose file.

promtool (from Debian's ``prometheus`` package) checks and unit-tests the
alert rules; the dashboard and alerts may only query metrics Sada exports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sada.infra.metrics import HISTOGRAMS, LABELS, METRIC_NAMES

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "ops" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERT_TESTS = PROMETHEUS / "tests" / "alerts_test.yml"
PROMETHEUS_CONFIG = PROMETHEUS / "prometheus.yml"
GRAFANA = ROOT / "ops" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "sada.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "sada.yml"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

REQUIRED_ALERTS = {
    "SadaSlaBreachRateHigh",
    "SadaAtRiskGrowing",
    "SadaDlqGrowing",
    "SadaPipelineLagHigh",
    "SadaWorkerDown",
    "SadaSubmissionsOverdue",
    "SadaPipelineClockStalled",
}
# Series Prometheus itself writes for every scrape target.
PROMETHEUS_SERIES = {"up"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found: install Debian's prometheus package "
            "(apt-get update && apt-get install -y prometheus), which ships promtool"
        )
    return path


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# --- PromQL metric names -----------------------------------------------------

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_VARIABLES = re.compile(r"\$\{?\w+\}?")
# An identifier not followed by "(" (a function) and not glued to a number (1h, 1e3).
_IDENTIFIER = re.compile(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w(])(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "offset", "bool", "inf", "nan", "by", "without", "on"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    for pattern in (_STRINGS, _MATCHERS, _RANGES, _GROUPING, _VARIABLES):
        expr = pattern.sub(" ", expr)
    return {m for m in _IDENTIFIER.findall(expr) if m.lower() not in _KEYWORDS}


def is_sada_metric(name: str) -> bool:
    if name in METRIC_NAMES:
        return True
    return any(
        name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS
        for suffix in ("_bucket", "_sum", "_count")
    )


def test_metric_name_extraction_sees_through_promql_syntax() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, unit) (rate(sada_nope_bucket{unit=~"$unit"}'
        "[$__rate_interval]))) > 3 and on (unit) sada_other offset 1h "
        "or time() - sada_clock_seconds"
    )
    assert metric_names(expr) == {"sada_nope_bucket", "sada_other", "sada_clock_seconds"}
    assert is_sada_metric("sada_decision_lag_seconds_bucket")
    assert is_sada_metric("sada_escalations_total")
    assert not is_sada_metric("sada_escalations_total_bucket")
    assert not is_sada_metric("sada_events_received_bucket")


# --- Alert rules ---------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    doc = load_yaml(ALERTS)
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def test_alert_rules_pass_promtool_check() -> None:
    result = run_promtool("check", "rules", str(ALERTS))
    assert "SUCCESS" in result.stdout


def test_alert_rule_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", str(ALERT_TESTS))
    assert "SUCCESS" in result.stdout


def test_prometheus_config_is_valid_and_scrapes_the_worker() -> None:
    run_promtool("check", "config", str(PROMETHEUS_CONFIG))
    config = load_yaml(PROMETHEUS_CONFIG)
    assert "alerts.yml" in config["rule_files"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    sada = jobs["sada"]
    assert sada.get("metrics_path", "/metrics") == "/metrics"
    # Every replica is scraped: the compose service name resolves to all of them.
    (sd,) = sada["dns_sd_configs"]
    assert (sd["names"], sd["type"], sd["port"]) == (["sada"], "A", 6066)


def test_the_required_alerts_exist_with_severity_and_annotations() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= REQUIRED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"].get("summary"), rule["alert"]
        assert rule["annotations"].get("description"), rule["alert"]


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    doc = load_yaml(ALERT_TESTS)
    assert [str((ALERT_TESTS.parent / f).resolve()) for f in doc["rule_files"]] == [
        str(ALERTS.resolve())
    ]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - firing == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown staying quiet"


def test_alerts_query_only_metrics_sada_exports() -> None:
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        unknown = {n for n in names if not is_sada_metric(n)} - PROMETHEUS_SERIES
        assert not unknown, f"{rule['alert']} queries {sorted(unknown)}"


# --- Grafana -------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def panel_exprs() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in all_panels(dashboard()["panels"])
        for target in panel.get("targets", [])
    ]


def test_dashboard_has_the_four_sections_and_a_unit_drill_down() -> None:
    dash = dashboard()
    rows = [p["title"] for p in dash["panels"] if p["type"] == "row"]
    for section in ("SLA overview", "Unit drill-down", "Escalations", "Ingestion health"):
        assert any(r.startswith(section) for r in rows), f"no {section!r} row in {rows}"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert "unit" in variables
    assert any("$unit" in expr for _t, expr in panel_exprs())
    for panel in all_panels(dash["panels"]):
        if panel["type"] != "row":
            assert panel.get("targets"), f"panel {panel['title']!r} has no query"


def test_dashboard_queries_only_metrics_sada_exports() -> None:
    for title, expr in panel_exprs():
        names = metric_names(expr)
        assert names, f"{title!r} queries no metric: {expr}"
        unknown = {n for n in names if not is_sada_metric(n)}
        assert not unknown, f"{title!r} queries {sorted(unknown)}"


def test_the_unit_variable_lists_the_units_sada_exports() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    match = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variables["unit"]["definition"])
    assert match, variables["unit"]["definition"]
    metric, label = match.groups()
    assert metric in METRIC_NAMES
    assert label == "unit" and label in LABELS[metric]


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # promtool parses PromQL when it checks rules, so each query becomes a recording rule.
    substitutions = {"$__rate_interval": "5m", "$__range": "1h", "$unit": ".*"}
    rules = []
    for i, (_title, expr) in enumerate(panel_exprs()):
        for var, value in substitutions.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool("check", "rules", str(path))


def test_dashboard_datasource_is_the_provisioned_one() -> None:
    sources = load_yaml(DATASOURCES)["datasources"]
    prometheus = [s for s in sources if s["type"] == "prometheus"]
    assert len(prometheus) == 1
    uid = prometheus[0]["uid"]
    assert prometheus[0]["url"] == "http://prometheus:9090"
    for panel in all_panels(dashboard()["panels"]):
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == uid, panel["title"]


# --- docker-compose ------------------------------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


def is_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    tag = last.split(":", 1)[1]
    return bool(tag) and tag != "latest"


def test_pinned_image_check_rejects_floating_tags() -> None:
    assert is_pinned("apache/kafka:3.9.1")
    assert is_pinned("localhost:5000/sada:0.1.0")
    assert not is_pinned("grafana/grafana")
    assert not is_pinned("grafana/grafana:latest")
    assert not is_pinned("localhost:5000/sada")


def test_every_service_has_a_pinned_image_or_a_build_and_a_healthcheck() -> None:
    services = compose()["services"]
    assert {"kafka", "postgres", "prometheus", "grafana", "sada"} <= set(services)
    for name, service in services.items():
        if "build" not in service:
            assert is_pinned(service.get("image", "")), f"{name}: image not pinned"
        elif "image" in service:
            assert is_pinned(service["image"]), f"{name}: image not pinned"
        test = service.get("healthcheck", {}).get("test")
        assert test and test != ["NONE"], f"{name}: no healthcheck"


def test_compose_runs_kafka_in_kraft_mode_and_the_worker_against_it() -> None:
    services = compose()["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert "KAFKA_ZOOKEEPER_CONNECT" not in kafka["environment"]

    sada = services["sada"]
    assert sada["build"]["dockerfile"] == "Dockerfile"
    command = sada["command"]
    assert command[:3] == ["run", "--bootstrap", "kafka:9092"]
    assert command[3] == "--database"
    assert command[4].startswith("postgresql+psycopg2://")
    assert "@postgres:5432/" in command[4]
    assert all(k.startswith(("SADA_", "PROMETHEUS_")) for k in sada["environment"])
    assert sada["environment"]["SADA_HTTP_HOST"] == "0.0.0.0"
    assert sada["environment"]["SADA_HTTP_PORT"] == "6066"
    for dependency in ("kafka", "postgres"):
        assert sada["depends_on"][dependency]["condition"] == "service_healthy"
    # `--scale sada=3` needs no other change: no fixed name, no fixed host port.
    assert "container_name" not in sada
    assert all(str(port).count(":") == 2 and "::" in str(port) for port in sada["ports"])


def test_compose_mounts_the_rules_and_dashboards_that_exist() -> None:
    services = compose()["services"]
    mounts = {
        service: {
            m.split(":")[1]: (COMPOSE.parent / m.split(":")[0]).resolve()
            for m in services[service]["volumes"]
            if m.startswith("./")
        }
        for service in ("prometheus", "grafana")
    }
    assert mounts["prometheus"]["/etc/prometheus/prometheus.yml"] == PROMETHEUS_CONFIG.resolve()
    assert mounts["prometheus"]["/etc/prometheus/alerts.yml"] == ALERTS.resolve()
    assert mounts["grafana"]["/etc/grafana/provisioning"] == (GRAFANA / "provisioning").resolve()
    providers = load_yaml(DASHBOARD_PROVIDERS)["providers"]
    dashboards_dir = mounts["grafana"][providers[0]["options"]["path"]]
    assert (dashboards_dir / DASHBOARD.name).resolve() == DASHBOARD.resolve()


def test_dockerfile_installs_the_package_on_python_3_11() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11[\w.-]*-slim\b", text, re.MULTILINE)
    assert re.search(r"^RUN pip install \.", text, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["sada"\]', text, re.MULTILINE)

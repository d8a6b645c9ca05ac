"""A real Prometheus server scraping a running ``sada run``, queried as an operator would.

Debian's ``prometheus`` package provides the server; it runs as a child
process on a free port with a generated configuration that scrapes Sada every
second. The week of traffic of ``test_dashboard.scenario`` is published to
Sada's embedded broker; once Sada has taken it in and a scrape has happened
since, PromQL answers with the open submissions per unit and per SLA status
that the domain's reference model gives for those events.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_dashboard import LiveSada, expected_open, open_by_unit, run_scenario, scenario

from sada.infra.broker import free_port


def prometheus_bin() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail(
            "prometheus not found: install Debian's prometheus package "
            "(apt-get update && apt-get install -y prometheus)",
            pytrace=False,
        )
    return path


class Prometheus:
    """A Prometheus server scraping one target every second, with its own storage."""

    def __init__(self, tmp: Path, target: str) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / "prometheus.yml"
        # JSON is YAML: no YAML writer needed.
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "scrape_configs": [
                        {
                            "job_name": "sada",
                            "scrape_interval": "1s",
                            "scrape_timeout": "1s",
                            "static_configs": [{"targets": [target]}],
                        }
                    ],
                }
            )
        )
        self.log_path = tmp / "prometheus.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [
                prometheus_bin(),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
        self.wait_until("Prometheus ready", self._ready, timeout=60)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text("utf-8", "replace")[-3000:]

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as reply:
            body = json.loads(reply.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("/api/v1/query", query=expr)["result"]
        return result

    def by(self, expr: str, label: str) -> dict[str, int]:
        """An instant vector as {label value: value}, leaving out zeros."""
        out = {}
        for series in self.query(expr):
            value = float(series["value"][1])
            if value:
                out[series["metric"].get(label, "")] = int(value)
        return out

    def target_health(self) -> str:
        targets = self.api("/api/v1/targets")["activeTargets"]
        return "; ".join(f"{t['scrapeUrl']}: {t['health']} {t['lastError']}" for t in targets)

    def wait_until(self, what: str, check: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited while waiting for {what}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout}s:\n{self.log()}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def test_prometheus_sees_open_submissions_per_unit(tmp_path: Path) -> None:
    prometheus_bin()
    sada = LiveSada(tmp_path / "sada")
    prometheus = None
    try:
        prometheus = Prometheus(tmp_path / "prometheus", f"127.0.0.1:{sada.port}")
        scn = scenario()
        run_scenario(sada, scn)
        settled = time.time()

        def scraped_since() -> bool:
            stamps = prometheus.query('timestamp(up{job="sada"} == 1)')
            return bool(stamps) and float(stamps[0]["value"][1]) >= settled

        try:
            prometheus.wait_until("scrape of sada after it settled", scraped_since, timeout=30)
        except AssertionError as e:
            raise AssertionError(f"{e}\ntargets: {prometheus.target_health()}") from e

        expected = expected_open(scn)
        assert prometheus.by("sum by (unit) (sada_submissions_open)", "unit") == open_by_unit(
            expected
        )
        by_status: dict[str, int] = {}
        for (_unit, status), n in expected.items():
            by_status[status] = by_status.get(status, 0) + n
        assert prometheus.by("sum by (status) (sada_submissions_open)", "status") == by_status
        for status in ("at_risk", "overdue"):
            assert prometheus.by(f"sum by (unit) (sada_submissions_{status})", "unit") == {
                unit: n for (unit, st), n in expected.items() if st == status
            }
        assert prometheus.by(
            'sum by (reason) (sada_events_rejected_total{reason!=""})', "reason"
        ) == {"unknown_unit": scn.rejected}
        clock = prometheus.query("sada_pipeline_clock_seconds")
        assert float(clock[0]["value"][1]) == scn.clock.timestamp()
    finally:
        if prometheus is not None:
            prometheus.stop()
        sada.stop()

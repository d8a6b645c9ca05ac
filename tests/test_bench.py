"""``sada bench``: a quick run produces every figure, each with a unit, finite and sane.

Nothing here asserts how fast anything is: the figures depend on the machine.
What a user relies on is that every figure is there, at every workload size,
with its unit, and that the numbers are possible ones (rates above zero,
ratios of comparable rates within reason, latency percentiles in order).
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import pytest

from sada.app import cli

# Measured at every workload size.
PER_SIZE = {
    "raw_produce",
    "raw_batch_produce",
    "raw_consume",
    "e2e_throughput",
    "e2e_vs_raw",
    "e2e_vs_raw_batches",
    "e2e_cost",
    "e2e_accepted",
    "e2e_late",
    "replay_archive",
    "replay_log",
    "peak_rss",
    "state_per_open_submission",
    "state_per_submission",
    "ingress_state",
}
# Measured once: growth between the smallest and largest size; latency at the fixed
# offered load and at a light one.
LATENCY = {
    f"{p}_{name}"
    for p in ("latency", "latency_light")
    for name in ("offered", "samples", "p50", "p95", "p99", "max")
}
# With three webhook endpoints (at the smallest size): the throughput, and its ratio to none.
WEBHOOKS = {"e2e_throughput_webhooks", "e2e_webhooks_vs_none"}
ONCE = {"e2e_cost_growth", "replay_cost_growth"} | LATENCY | WEBHOOKS
# Shares of events that went wrong: zero is the best value, not an insane one.
ANOMALY_SHARES = {"e2e_late"}


@pytest.fixture
def no_sada_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's SADA_KAFKA_BOOTSTRAP or SADA_DATABASE_URL must not send the
    # bench to their infrastructure.
    for name in list(os.environ):
        if name.startswith("SADA_"):
            monkeypatch.delenv(name)


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.usefixtures("no_sada_environment")
def test_quick_bench_produces_every_figure_with_a_unit(tmp_path: Path) -> None:
    results = tmp_path / "results" / "bench.json"
    stdout, stderr = io.StringIO(), io.StringIO()

    code = cli.run(["bench", "--quick", "--json", str(results)], stdout, stderr)

    assert code == 0, stderr.getvalue()
    report = json.loads(results.read_text())
    sizes = report["plan"]["sizes"]
    assert len(sizes) >= 2
    figures = report["figures"]
    by_key = {(f["id"], f["events"]): f for f in figures}
    for n in sizes:
        missing = {i for i in PER_SIZE if (i, n) not in by_key}
        assert not missing, f"figures missing at {n} events: {sorted(missing)}"
    missing_once = ONCE - {f["id"] for f in figures}
    assert not missing_once, f"figures missing: {sorted(missing_once)}"

    for f in figures:
        value = f["value"]
        assert isinstance(f["unit"], str) and f["unit"].strip(), f
        assert math.isfinite(value), f
        if f["id"] in ANOMALY_SHARES:
            assert 0 <= value <= 1, f
        else:
            assert value > 0, f
        if f["unit"] == "ratio":
            assert value < 10, f
        if f["unit"] == "share":
            assert value <= 1, f
    for n in sizes:
        # The pipeline carries the broker's messages; it cannot outrun the raw producer tenfold.
        assert by_key[("e2e_vs_raw", n)]["value"] < 10
        # Ingress writes the log as record batches: the limit it is held to is that rate.
        assert by_key[("e2e_vs_raw_batches", n)]["value"] < 1

    # The endpoints were told, and every delivery was answered.
    hooks = report["details"]["webhooks"]
    assert hooks["endpoints"] == 3 and hooks["delivered"] > 0 and hooks["drained"], hooks

    values = {f["id"]: f["value"] for f in figures if f["events"] is None}
    for p in ("latency", "latency_light"):
        assert values[f"{p}_p50"] <= values[f"{p}_p95"] <= values[f"{p}_p99"] <= values[f"{p}_max"]

    # The table a user reads names every figure with its unit.
    table = stdout.getvalue()
    for f in figures:
        line = next((ln for ln in table.splitlines() if ln.startswith(f["label"])), None)
        assert line is not None and f" {f['unit']}" in line, f["label"]
    assert str(results) in table


@pytest.mark.usefixtures("no_sada_environment")
def test_quick_and_full_together_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    stdout, stderr = io.StringIO(), io.StringIO()

    code = cli.run(["bench", "--quick", "--full"], stdout, stderr)

    assert code != 0
    # argparse reports usage errors on the process's own stderr.
    assert "--full" in stderr.getvalue() + capsys.readouterr().err

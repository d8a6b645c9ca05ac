"""``sada bench`` workloads keep their mix at every size; ``--workers N`` runs and reports CPU.

The mix is what makes cost per event comparable between sizes: a creation or
a response costs more than a vote, so a workload whose share of votes moved
with its size would show growth that is not the pipeline's.
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from sada.app import cli
from sada.app.bench.mixes import generate
from sada.pipeline.domain.config import load_config


def _shares(types: Counter[str]) -> dict[str, float]:
    total = sum(types.values())
    return {t: c / total for t, c in types.items()}


def test_the_fixed_mix_has_the_same_proportions_at_every_size() -> None:
    config = load_config(None)
    _, small = generate(config, 10_000, 7, "fixed")
    _, large = generate(config, 40_000, 7, "fixed")

    assert set(small) == set(large)
    for t, share in _shares(large).items():
        # The only difference is the cut: the last submissions' lives are not over yet.
        assert abs(share - _shares(small)[t]) < 0.01, t
    shares = _shares(large)
    assert shares["sada.vote.cast"] == pytest.approx(0.60, abs=0.01)
    assert shares["sada.submission.created"] == pytest.approx(0.10, abs=0.01)
    assert shares["sada.vote.retracted"] == pytest.approx(0.10, abs=0.01)
    assert shares["sada.response.posted"] == pytest.approx(0.20, abs=0.01)


def test_the_realistic_mix_keeps_its_proportions_as_history_grows() -> None:
    config = load_config(None)
    _, small = generate(config, 10_000, 7, "realistic")
    _, large = generate(config, 60_000, 7, "realistic")

    # Blocks of the same community: the share of votes stays put (the simulator's
    # single history of a growing community moved it from 77% to 48%).
    assert abs(_shares(large)["sada.vote.cast"] - _shares(small)["sada.vote.cast"]) < 0.05
    assert "sada.satisfaction.rated" in large and "sada.submission.withdrawn" in large


def test_realistic_blocks_never_repeat_a_tracking_code_or_go_back_in_time() -> None:
    import orjson

    records, _ = generate(load_config(None), 25_000, 3, "realistic")
    events = [orjson.loads(v) for _, _, v in records]
    codes = [e["data"]["tracking_code"] for e in events if e["type"] == "sada.submission.created"]
    assert len(codes) == len(set(codes))
    times = [e["time"] for e in events]
    assert times == sorted(times)


@pytest.mark.broker
@pytest.mark.slow
def test_bench_with_two_workers_reports_cpu_per_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("SADA_"):
            monkeypatch.delenv(name)
    results = tmp_path / "bench.json"
    stdout, stderr = io.StringIO(), io.StringIO()

    code = cli.run(
        ["bench", "--events", "3000", "--workers", "2", "--json", str(results)], stdout, stderr
    )

    assert code == 0, stderr.getvalue()
    figures = {f["id"]: f for f in json.loads(results.read_text())["figures"]}
    assert figures["e2e_cpu"]["value"] > 0
    assert figures["e2e_cpu"]["unit"] == "µs/event"
    # Two workers in one group still decide every event exactly once.
    assert figures["e2e_accepted"]["value"] == pytest.approx(1.0)
    assert "CPU per event, 2 worker(s)" in stdout.getvalue()

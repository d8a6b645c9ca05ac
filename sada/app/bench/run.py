"""``run_bench``: every phase of a plan, on one broker, in one run; and what it ran on."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sada.app.bench.load import PRODUCER_OPTIONS
from sada.app.bench.measure import Bench, say
from sada.app.bench.plan import IDLE_SECONDS, BenchPlan
from sada.app.bench.report import BenchReport
from sada.app.bench.scratch import Infra, Scratch
from sada.app.bench.webhooks import with_webhooks
from sada.infra.settings import Settings
from sada.pipeline.domain.config import Config


def run_bench(
    plan: BenchPlan,
    settings: Settings,
    config: Config,
    out: TextIO,
    report: BenchReport | None = None,
) -> BenchReport:
    """Run every phase of ``plan``; progress goes to ``out``. Cleans up whatever it started.

    Figures are added to ``report`` as they are measured, so a caller that
    passes its own report still has the figures so far if the run is interrupted.
    """
    report = report if report is not None else BenchReport(plan, datetime.now(UTC))
    bench_settings = settings.replace(clock="event", idle_seconds=IDLE_SECONDS)
    started = time.perf_counter()
    try:
        # The database URL is checked first: a bad one fails before a broker starts.
        with Scratch(settings.database_url) as scratch, Infra(bench_settings, out) as infra:
            report.environment = _environment(infra, scratch, bench_settings)
            say(
                out,
                f"sada bench: broker {infra.describe}; database {scratch.describe}; sizes "
                + ", ".join(f"{n:,}" for n in plan.sizes)
                + f"; latency {plan.latency_seconds:g} s at {plan.latency_rate:,.0f} events/s",
            )
            bench = Bench(plan, bench_settings, config, infra, scratch, report, out)
            for n in plan.sizes:
                bench.workload(n)
            with_webhooks(bench, plan.sizes[0])
            bench.growth()
            bench.latency()
    finally:
        report.seconds = time.perf_counter() - started
        report.environment["load_average_end"] = _load_average()
    return report


def _environment(infra: Infra, scratch: Scratch, settings: Settings) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        # Other work on the machine moves every figure; the load average says how much.
        "load_average_start": _load_average(),
        "source": _source_version(),
        "broker": infra.describe,
        "database": scratch.describe,
        "partitions": settings.partitions,
        "clock": settings.clock,
        "idle_seconds": settings.idle_seconds,
        "tick_seconds": settings.tick_seconds,
        "grace_seconds": settings.grace_seconds,
        "producer": dict(PRODUCER_OPTIONS),
    }


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _source_version() -> dict[str, Any] | None:
    """The git commit of the source tree measured, and whether it had local changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None  # an installed package, or no git: nothing to say
    return {"commit": commit, "modified": bool(changes)}

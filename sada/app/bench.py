"""``sada bench``: Sada measured against the raw broker it runs on, all in one run.

Every figure comes from the same broker in the same run, so they compare:

- **raw broker**: one aiokafka producer sends N messages of exactly the
  workload's sizes and keys (batched, never awaiting one at a time), then a
  consumer with manual assignment reads them back to the fetch high watermark;
  the better of two rounds each. That is the physical limit of the client and
  the broker on this machine.
- **end-to-end**: N simulated events (:func:`~sada.producers.simulator.simulate`)
  are generated up front, then published raw to the input topics as fast as
  the producer goes; the clock runs from the first publish until the projector
  has applied every record ingress wrote to the canonical log. The shares of
  events accepted and of events late (their time already passed by the
  pipeline clock on arrival) say whether the burst was carried as it should be.
- **latency**: submissions with 49 supporters each are set up first; then the
  50th supporter of each is sent among filler votes at a fixed offered load,
  and the time from each send until its escalation is readable on
  ``sada.escalations`` is recorded. The same again at a light load shows the
  floor under it, where nothing queues.
- **replay**: the archive (database to a fresh database) and the canonical log
  (Kafka to a fresh database) are folded again by :func:`~sada.app.replay.replay`.
- **memory**: the peak resident set of this process, and the bytes of the
  projector's decision state (the fold's submission states and its deadline
  index, counted object by object) per submission.
- **growth**: the workload figures at each size, so cost per event shows.

The load (generation, raw test, publishing, the latency sender and reader)
runs in a child process, so it does not share an interpreter with the
pipeline; the pipeline runs in this process as ``sada run`` runs it (one
event loop, the projector's store writes in a thread).

The pipeline runs with the event clock (``SADA_CLOCK=event``) and
``idle_seconds=0.2``: an input partition that delivers nothing for 0.2 s stops
holding the clock back. With only votes flowing, the vote partitions that
receive nothing hold it back for exactly that long, so the setting bounds both
the tail of a burst and the escalation latency; the production default (5 s)
would add up to 5 s to each.

Each phase starts from empty Sada topics (deleted and created again, the
ingress group's offsets reset) and fresh stores: temporary SQLite files by
default, scratch schemas on a PostgreSQL ``--database``. On a ``--bootstrap``
Kafka the bench refuses to start if any ``sada.*`` topic holds records, and
leaves the topics empty when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import math
import multiprocessing
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from sada.app.progress import Progress
from sada.infra import topics
from sada.infra.broker import EmbeddedBroker, admin_client
from sada.infra.settings import Settings
from sada.infra.sizing import deep_size, fold_state
from sada.pipeline.domain.config import Config, load_config
from sada.pipeline.domain.errors import BrokerError, SadaError

if TYPE_CHECKING:  # imported where used: ``sada --help`` need not load the pipeline
    from sada.consumers.store import SqlStore
    from sada.pipeline.worker import Worker

log = logging.getLogger(__name__)

# -- what is measured, and how much --------------------------------------------------------

DEFAULT_SIZES = (10_000, 100_000)
FULL_SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (2_000, 5_000)
LATENCY_RATE = 2_000.0  # offered load of the latency phase, events/s
LATENCY_SECONDS = 15.0
QUICK_LATENCY_SECONDS = 4.0
LATENCY_EVERY = 20  # one vote in this many is the 50th supporter of a submission
LATENCY_FILLERS = 64  # submissions that take the filler (oppose) votes
IDLE_SECONDS = 0.2
SEED = 2026

RAW_TOPIC = "sada.bench.raw"
# The history starts on a Saturday (a working day of the default calendar).
WORKLOAD_START = datetime(2026, 1, 3, tzinfo=UTC)
WORKLOAD_DAYS = 30.0
LATENCY_BASE = datetime(2026, 1, 3, 6, 0, tzinfo=UTC)
LATENCY_SOURCE = "/integrations/bench"

PRODUCER_OPTIONS: Mapping[str, Any] = {
    "acks": "all",
    "linger_ms": 5,
    "max_batch_size": 262_144,
}
FETCH_BYTES = 4 * 1024 * 1024
RAW_ROUNDS = 2
STALL_SECONDS = 120.0  # no progress for this long ends the bench with an error
LATENCY_DRAIN_SECONDS = 30.0
# The light-load reference: a tenth of the load, for half the window, with a
# larger share of target votes so that its percentiles rest on enough samples.
LIGHT_RATE = 200.0
LIGHT_SECONDS_SHARE = 0.5
LIGHT_EVERY = 5


@dataclass(frozen=True, slots=True)
class Target:
    """A goal a figure is compared against: ``value op bound``."""

    op: str  # ">=" or "<="
    bound: float
    text: str

    def met(self, value: float) -> bool:
        return value >= self.bound if self.op == ">=" else value <= self.bound


TARGETS: Mapping[str, Target] = {
    "e2e_throughput": Target(">=", 20_000, "≥ 20,000"),
    "e2e_vs_raw": Target(">=", 0.40, "≥ 0.40"),
    "latency_p99": Target("<=", 250, "≤ 250"),
    "replay_archive": Target(">=", 50_000, "≥ 50,000"),
    "state_per_open_submission": Target("<=", 2_048, "≤ 2,048"),
    "e2e_cost_growth": Target("<=", 1.25, "≤ 1.25 (flat)"),
}


@dataclass(frozen=True, slots=True)
class Figure:
    id: str
    label: str
    value: float
    unit: str
    events: int | None = None  # workload size; None for the fixed-load latency figures

    @property
    def target(self) -> Target | None:
        return TARGETS.get(self.id)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "label": self.label,
            "value": self.value,
            "unit": self.unit,
            "events": self.events,
        }
        target = self.target
        if target is not None:
            out["target"] = {"op": target.op, "bound": target.bound, "met": target.met(self.value)}
        return out


@dataclass(frozen=True, slots=True)
class BenchPlan:
    sizes: tuple[int, ...]
    latency_seconds: float
    latency_rate: float = LATENCY_RATE
    seed: int = SEED

    @classmethod
    def choose(cls, *, quick: bool, full: bool, events: int | None) -> BenchPlan:
        if quick and full:
            raise SadaError("--quick and --full exclude each other")
        if events is not None and events < 100:
            raise SadaError(f"--events must be at least 100, got {events}")
        sizes: tuple[int, ...] = FULL_SIZES if full else QUICK_SIZES if quick else DEFAULT_SIZES
        if events is not None:
            sizes = (events,)
        return cls(sizes, QUICK_LATENCY_SECONDS if quick else LATENCY_SECONDS)


@dataclass(slots=True)
class BenchReport:
    plan: BenchPlan
    started: datetime
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, id_: str, label: str, value: float, unit: str, events: int | None) -> None:
        self.figures.append(Figure(id_, label, float(value), unit, events))

    def as_json(self) -> dict[str, Any]:
        return {
            "started": self.started.isoformat(),
            "seconds": round(self.seconds, 3),
            "plan": dataclasses.asdict(self.plan),
            "environment": self.environment,
            "figures": [f.as_json() for f in self.figures],
            "details": self.details,
        }


# -- the run -------------------------------------------------------------------------------


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
        with _Scratch(settings.database_url) as scratch, _Infra(bench_settings, out) as infra:
            report.environment = _environment(infra, scratch, bench_settings)
            _say(
                out,
                f"sada bench: broker {infra.describe}; database {scratch.describe}; sizes "
                + ", ".join(f"{n:,}" for n in plan.sizes)
                + f"; latency {plan.latency_seconds:g} s at {plan.latency_rate:,.0f} events/s",
            )
            bench = _Bench(plan, bench_settings, config, infra, scratch, report, out)
            for n in plan.sizes:
                bench.workload(n)
            bench.growth()
            bench.latency()
    finally:
        report.seconds = time.perf_counter() - started
        report.environment["load_average_end"] = _load_average()
    return report


class _Bench:
    def __init__(
        self,
        plan: BenchPlan,
        settings: Settings,
        config: Config,
        infra: _Infra,
        scratch: _Scratch,
        report: BenchReport,
        out: TextIO,
    ) -> None:
        self.plan = plan
        self.settings = settings
        self.config = config
        self.infra = infra
        self.scratch = scratch
        self.report = report
        self.out = out
        self.sizes: dict[int, dict[str, Any]] = {}
        report.details["sizes"] = self.sizes

    def _job(self, kind: str, **extra: Any) -> dict[str, Any]:
        path = self.settings.config_path
        return {
            "kind": kind,
            "bootstrap": self.infra.bootstrap,
            "partitions": self.settings.partitions,
            "config": str(path) if path else None,
            "seed": self.plan.seed,
            **extra,
        }

    # -- one workload size ------------------------------------------------------------

    def workload(self, n: int) -> None:
        tag = f"[{n:,}]"
        detail: dict[str, Any] = {}
        self.sizes[n] = detail
        with _Child.start(self._job("workload", events=n)) as child:
            generating = Progress(self.out, f"{tag} generating events", n)
            generated = child.expect("generated", generating)
            generating.done()
            detail["workload"] = generated
            raw = child.expect("raw")
            detail["raw"] = raw
            _say(
                self.out,
                f"{tag} raw broker: produce {raw['produce_rate']:,.0f} msg/s "
                f"({raw['batch_produce_rate']:,.0f} msg/s as record batches), "
                f"consume {raw['consume_rate']:,.0f} msg/s",
            )
            live = asyncio.run(self._end_to_end(child, n, detail))
        e2e = detail["e2e"]
        rate = n / e2e["seconds"]
        self.report.add("raw_produce", "raw broker produce", raw["produce_rate"], "msg/s", n)
        self.report.add(
            "raw_batch_produce",
            "raw broker produce, record batches",
            raw["batch_produce_rate"],
            "msg/s",
            n,
        )
        self.report.add("raw_consume", "raw broker consume", raw["consume_rate"], "msg/s", n)
        self.report.add("e2e_throughput", "end-to-end throughput", rate, "events/s", n)
        self.report.add(
            "e2e_vs_raw", "end-to-end ÷ raw produce", rate / raw["produce_rate"], "ratio", n
        )
        self.report.add(
            "e2e_vs_raw_batches",
            "end-to-end ÷ raw produce as record batches",
            rate / raw["batch_produce_rate"],
            "ratio",
            n,
        )
        self.report.add("e2e_cost", "end-to-end cost per event", 1e6 / rate, "µs/event", n)
        ing = e2e["ingress"]
        self.report.add(
            "e2e_accepted", "end-to-end events accepted", ing["released"] / n, "share", n
        )
        self.report.add("e2e_late", "end-to-end events late", ing["late"] / n, "share", n)
        memory = detail["memory"]
        self.report.add(
            "peak_rss", "peak RSS of the pipeline process", memory["peak_rss_mib"], "MiB", n
        )
        self.report.add(
            "state_per_open_submission",
            "decision state per open submission",
            memory["state_bytes"] / max(1, memory["open_submissions"]),
            "bytes",
            n,
        )
        self.report.add(
            "state_per_submission",
            "decision state per submission held",
            memory["state_bytes"] / max(1, memory["submissions"]),
            "bytes",
            n,
        )
        self.report.add(
            "ingress_state_per_event",
            "ingress dedup state per event",
            memory["ingress_bytes"] / max(1, n),
            "bytes",
            n,
        )
        try:
            self._replays(live, n, detail)
        finally:
            self.scratch.drop(live)

    async def _end_to_end(self, child: _Child, n: int, detail: dict[str, Any]) -> SqlStore:
        """Publish the workload into a fresh pipeline; the live store it leaves behind."""
        tag = f"[{n:,}]"
        await asyncio.to_thread(self.infra.reset_topics)
        store = self.scratch.new(f"live-{n}")
        worker = _worker(self.settings, self.config, store, self.infra, self.scratch.url_for(store))
        await worker.start()
        try:
            await child.expect_async("ready", worker)
            progress = Progress(self.out, f"{tag} end-to-end (events applied)", n)
            started = time.perf_counter()
            child.send("go")
            ingress_done, finished = await _until_applied(worker, n, progress, started)
            progress.done()
            published = await child.expect_async("published", worker)
            seconds = finished - started
            memory = await _memory(worker)
            detail["e2e"] = {
                "seconds": seconds,
                "ingress_seconds": ingress_done - started,
                "publish_seconds": published,
                "publish_rate": n / published if published > 0 else None,
                "ingress": dataclasses.asdict(worker.ingress.stats),
                "projector": dataclasses.asdict(worker.projector.stats),
            }
            detail["memory"] = memory
            ing = worker.ingress.stats
            _say(
                self.out,
                f"{tag} end-to-end {n / seconds:,.0f} events/s (ingress settled all at "
                f"{ingress_done - started:.2f} s, projector at {seconds:.2f} s; "
                f"publishing took {published:.2f} s); rejected {worker.projector.stats.rejected}, "
                f"late {worker.projector.stats.late}, "
                f"escalations {worker.projector.stats.escalations}",
            )
            if ing.rejected or worker.projector.stats.rejected:
                reasons = await _dlq_reasons(self.infra.bootstrap)
                detail["e2e"]["rejected"] = dict(reasons)
                _say(self.out, f"{tag} rejected by reason: {dict(reasons)}")
        finally:
            await worker.stop()
        return store

    def _replays(self, live: SqlStore, n: int, detail: dict[str, Any]) -> None:
        from sada.app.replay import archive_records, log_records, replay
        from sada.pipeline.domain.rules import Rules

        tag = f"[{n:,}]"
        rules = Rules.from_config(self.config)
        total = sum(c.next_offset for c in live.checkpoints())

        target = self.scratch.new(f"replay-archive-{n}")
        try:
            progress = Progress(self.out, f"{tag} replay from archive (records)", total)
            started = time.perf_counter()
            stats = replay(archive_records(live), rules, target, on_progress=progress.advance)
            seconds = time.perf_counter() - started
            progress.done()
        finally:
            self.scratch.drop(target)
        detail["replay_archive"] = {
            "records": stats.records,
            "seconds": seconds,
            "escalations": stats.escalations,
        }
        self.report.add(
            "replay_archive", "replay from archive", stats.records / seconds, "records/s", n
        )

        target = self.scratch.new(f"replay-log-{n}")
        try:
            started = time.perf_counter()
            records = log_records(self.infra.bootstrap)
            read = time.perf_counter() - started
            progress = Progress(self.out, f"{tag} replay from log (records)", len(records))
            stats = replay(records, rules, target, on_progress=progress.advance)
            seconds = time.perf_counter() - started
            progress.done()
            del records
        finally:
            self.scratch.drop(target)
        detail["replay_log"] = {
            "records": stats.records,
            "seconds": seconds,
            "read_seconds": read,
            "escalations": stats.escalations,
        }
        self.report.add("replay_log", "replay from log", stats.records / seconds, "records/s", n)
        if detail["replay_archive"]["escalations"] != stats.escalations:
            log.warning(
                "replays disagree: %d escalations from the archive, %d from the log",
                detail["replay_archive"]["escalations"],
                stats.escalations,
            )

    # -- growth -------------------------------------------------------------------------

    def growth(self) -> None:
        """Cost per event at the largest size over the smallest: 1 is flat."""
        sizes = sorted(self.sizes)
        if len(sizes) < 2:
            return
        small, large = sizes[0], sizes[-1]

        def cost(figure_id: str, n: int) -> float:
            value = next(
                f.value for f in self.report.figures if f.id == figure_id and f.events == n
            )
            return 1.0 / value

        label = f"{large:,} vs {small:,} events"
        self.report.add(
            "e2e_cost_growth",
            f"end-to-end cost per event, {label}",
            cost("e2e_throughput", large) / cost("e2e_throughput", small),
            "ratio",
            large,
        )
        self.report.add(
            "replay_cost_growth",
            f"archive replay cost per record, {label}",
            cost("replay_archive", large) / cost("replay_archive", small),
            "ratio",
            large,
        )

    # -- latency ------------------------------------------------------------------------

    def latency(self) -> None:
        """The figure asked for at the offered load, then the same at a light load.

        At a light load nothing queues, so the second set shows the floor the
        pipeline's own waits put under every escalation.
        """
        plan = self.plan
        self._latency_at(plan.latency_rate, plan.latency_seconds, LATENCY_EVERY, "latency", "")
        self._latency_at(
            LIGHT_RATE,
            plan.latency_seconds * LIGHT_SECONDS_SHARE,
            LIGHT_EVERY,
            "latency_light",
            f" at {LIGHT_RATE:,.0f} events/s",
        )

    def _latency_at(
        self, rate: float, seconds: float, every: int, prefix: str, suffix: str
    ) -> None:
        total = max(every, int(rate * seconds))
        job = self._job("latency", rate=rate, events=total, every=every, fillers=LATENCY_FILLERS)
        tag = f"[{prefix}]"
        detail: dict[str, Any] = {"rate": rate, "seconds": seconds}
        self.report.details[prefix] = detail
        with _Child.start(job) as child:
            result = asyncio.run(self._latency(child, detail, tag, seconds))
        lat = sorted(result["latencies_ms"])
        if not lat:
            raise SadaError(f"{tag} no escalation arrived at all")
        p50, p95, p99 = (_percentile(lat, q) for q in (0.50, 0.95, 0.99))
        detail.update(
            {
                "sent": result["sent"],
                "received": len(lat),
                "missing": result["missing"],
                "offered_rate": result["offered_rate"],
                "events": result["events"],
                "send_seconds": result["send_seconds"],
                "p50_ms": p50,
                "p95_ms": p95,
                "p99_ms": p99,
                "max_ms": lat[-1],
                "min_ms": lat[0],
            }
        )
        _say(
            self.out,
            f"{tag} {len(lat):,} escalations at {result['offered_rate']:,.0f} events/s offered: "
            f"p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms, max {lat[-1]:.1f} ms"
            + (f"; {result['missing']} never arrived" if result["missing"] else ""),
        )
        r = self.report
        offered = result["offered_rate"]
        r.add(f"{prefix}_offered", f"latency phase offered load{suffix}", offered, "events/s", None)
        r.add(f"{prefix}_samples", f"latency samples{suffix}", len(lat), "escalations", None)
        for name, value in (("p50", p50), ("p95", p95), ("p99", p99), ("max", lat[-1])):
            r.add(f"{prefix}_{name}", f"vote → escalation {name}{suffix}", value, "ms", None)

    async def _latency(
        self, child: _Child, detail: dict[str, Any], tag: str, seconds: float
    ) -> dict[str, Any]:
        await asyncio.to_thread(self.infra.reset_topics)
        store = self.scratch.new(tag.strip("[]"))
        worker = _worker(self.settings, self.config, store, self.infra, self.scratch.url_for(store))
        await worker.start()
        try:
            setup = await child.expect_async("ready", worker)
            progress = Progress(self.out, f"{tag} set-up, 49 supporters each (events)", setup)
            started = time.perf_counter()
            child.send("go")
            await child.expect_async("published", worker)
            _, finished = await _until_applied(worker, setup, progress, started)
            progress.done()
            detail["setup"] = {"events": setup, "seconds": finished - started}
            if worker.ingress.stats.rejected:
                reasons = await _dlq_reasons(self.infra.bootstrap)
                raise SadaError(f"{tag} set-up events were rejected: {dict(reasons)}")
            _say(self.out, f"{tag} sending for {seconds:g} s")
            child.send("go")
            result: dict[str, Any] = await child.expect_async(
                "latency", worker, timeout=seconds + LATENCY_DRAIN_SECONDS + 60
            )
            detail["projector"] = dataclasses.asdict(worker.projector.stats)
            detail["ingress"] = dataclasses.asdict(worker.ingress.stats)
        finally:
            await worker.stop()
            self.scratch.drop(store)
        return result


async def _dlq_reasons(bootstrap: str) -> Counter[str]:
    """How many records ``sada.dlq`` holds, by reason."""
    from sada.infra.reading import read_topic_to_end

    reasons: Counter[str] = Counter()

    def on_record(_partition: int, m: Any) -> None:
        headers = dict(m.headers or ())
        reasons[headers.get("sada.reason", b"?").decode("utf-8", "replace")] += 1

    await read_topic_to_end(bootstrap, topics.DLQ, on_record)
    return reasons


def _worker(
    settings: Settings, config: Config, store: SqlStore, infra: _Infra, projector_url: str | None
) -> Worker:
    """A worker built as ``sada run`` builds it, with a metrics registry of its own."""
    from prometheus_client import CollectorRegistry

    from sada.infra.metrics import Metrics
    from sada.pipeline.worker import Worker

    metrics = Metrics(CollectorRegistry(), config.units.keys())
    return Worker(settings, config, store, metrics, infra.bootstrap, infra.embedded, projector_url)


async def _until_applied(
    worker: Worker, expected: int, progress: Progress, started: float
) -> tuple[float, float]:
    """Wait until ingress has settled ``expected`` inputs and the projector applied all it wrote.

    Records in the canonical log are the events ingress released plus its
    ticks; the projector counts both as applied. Returns the instants
    (``perf_counter``) when ingress had settled everything and when the
    projector had applied everything.
    """
    ingress_done: float | None = None
    last = (-1, -1)
    moved = time.perf_counter()
    shown = 0
    while True:
        if worker.failure:
            raise SadaError(f"the pipeline failed: {worker.failure}")
        ing = worker.ingress.stats
        settled = ing.forwarded + ing.rejected
        proj = worker.projector.stats
        applied = proj.accepted + proj.rejected + proj.duplicates
        now = time.perf_counter()
        if settled >= expected and ingress_done is None:
            ingress_done = now
        if ingress_done is not None and applied >= expected:
            progress.advance(expected - shown)
            return ingress_done, now
        events_applied = min(expected, applied)
        if events_applied > shown:
            progress.advance(events_applied - shown)
            shown = events_applied
        if (settled, applied) != last:
            last, moved = (settled, applied), now
        elif now - moved > STALL_SECONDS:
            raise SadaError(
                f"the pipeline made no progress for {STALL_SECONDS:g} s "
                f"({settled:,} of {expected:,} inputs settled, {applied:,} log records applied)"
            )
        await asyncio.sleep(0.005)


def _percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted values, linearly interpolated."""
    if len(ordered) == 1:
        return ordered[0]
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# -- memory --------------------------------------------------------------------------------


async def _memory(worker: Worker) -> dict[str, Any]:
    """Peak RSS of the pipeline's processes, and the decision state of projector and ingress.

    The state is measured on the objects themselves, private ones included (the
    fold's deadline index, ingress's key sets): that is what memory holds. They
    are looked up by name, so a renamed one drops out of the sum, not the run.
    """
    from sada.pipeline.stages.projector_process import ProjectorProcess

    usage = resource.getrusage(resource.RUSAGE_SELF)
    # ru_maxrss is in kilobytes on Linux and in bytes on macOS.
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    projector = worker.projector
    if isinstance(projector, ProjectorProcess):
        measured = await projector.measure()
        projector_peak = measured.pop("peak_rss_bytes")
    else:
        measured = fold_state(p.fold for p in projector.projectors.values())
        projector_peak = 0
    ingress = worker.ingress.ingress
    ingress_roots = [
        getattr(ingress, name, None)
        for name in ("_keys", "_submissions", "_buffered_submissions", "_tracking_codes")
    ]
    ingress_bytes = deep_size([r for r in ingress_roots if r is not None], set())
    return {
        "peak_rss_mib": (peak + projector_peak) / 2**20,
        "ingress_process_peak_rss_mib": peak / 2**20,
        "projector_process_peak_rss_mib": projector_peak / 2**20,
        **measured,
        "ingress_bytes": ingress_bytes,
    }


# -- infrastructure: the broker, its topics, scratch stores ---------------------------------


class _Infra:
    """The broker of the whole run: embedded, or the ``--bootstrap`` one (checked to be unused)."""

    def __init__(self, settings: Settings, out: TextIO) -> None:
        self.settings = settings
        self.out = out
        self.broker: EmbeddedBroker | None = None
        self.bootstrap = settings.kafka_bootstrap or ""
        self.embedded = settings.kafka_bootstrap is None

    @property
    def describe(self) -> str:
        if self.broker is not None:
            return f"embedded Tansu at {self.bootstrap}"
        return f"Kafka at {self.bootstrap}"

    def __enter__(self) -> _Infra:
        if self.embedded:
            self.broker = EmbeddedBroker(broker_bin=self.settings.broker_bin).start()
            self.bootstrap = self.broker.bootstrap
        else:
            busy = asyncio.run(_topics_with_records(self.bootstrap))
            if busy:
                raise SadaError(
                    f"the Kafka at {self.bootstrap} holds records in {', '.join(busy)}; "
                    "sada bench deletes and recreates the sada.* topics, so it needs a "
                    "scratch cluster"
                )
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.broker is None and self.bootstrap:
                try:
                    _delete_topics(self.bootstrap, [RAW_TOPIC])
                    self.reset_topics()  # leave the cluster's Sada topics empty
                except Exception as e:  # cleanup must not hide the run's own outcome
                    log.warning("could not empty the Sada topics at %s: %s", self.bootstrap, e)
        finally:
            if self.broker is not None:
                self.broker.stop()

    def reset_topics(self) -> None:
        """Empty Sada topics: delete them, create them again, reset ingress's group offsets."""
        from aiokafka.errors import KafkaError

        _delete_topics(self.bootstrap, [t.name for t in topics.TOPICS])
        topics.ensure_topics(self.bootstrap, self.settings.partitions)
        try:
            asyncio.run(_reset_ingress_offsets(self.bootstrap))
        except KafkaError as e:
            raise BrokerError(f"cannot reset the ingress offsets at {self.bootstrap}: {e}") from e


def _delete_topics(bootstrap: str, names: Sequence[str], timeout: float = 60.0) -> None:
    """Delete those of ``names`` that exist and wait until the broker no longer lists them."""
    from kafka.errors import KafkaError

    try:
        with admin_client(bootstrap) as admin:
            present = [n for n in names if n in set(admin.list_topics())]
            if not present:
                return
            admin.delete_topics(present, timeout_ms=int(timeout * 1000))
            deadline = time.monotonic() + timeout
            while set(present) & set(admin.list_topics()):
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"topics still listed {timeout:g} s after deletion: {present}"
                    )
                time.sleep(0.1)
    except KafkaError as e:
        raise BrokerError(f"cannot delete topics at {bootstrap}: {e}") from e


def _create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from kafka.errors import KafkaError

    try:
        with admin_client(bootstrap) as admin:
            response = admin.create_topics(
                {name: {"num_partitions": partitions, "replication_factor": -1}},
                raise_errors=False,
            )
            for topic in response["topics"]:
                if topic["error_code"] != 0:
                    raise BrokerError(f"cannot create {name}: {topic.get('error_message')}")
            admin.wait_for_topics([name], timeout_ms=30_000)
    except KafkaError as e:
        raise BrokerError(f"cannot create {name} at {bootstrap}: {e}") from e


async def _topics_with_records(bootstrap: str) -> list[str]:
    """Sada topics at ``bootstrap`` that hold at least one record (ListOffsets > 0 suffices)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        await consumer.start()
    except KafkaError as e:
        raise BrokerError(f"cannot reach Kafka at {bootstrap}: {e}") from e
    try:
        tps = [
            TopicPartition(t.name, p)
            for t in topics.TOPICS
            for p in sorted(consumer.partitions_for_topic(t.name) or ())
        ]
        ends = await consumer.end_offsets(tps) if tps else {}
        return sorted({tp.topic for tp, end in ends.items() if end > 0})
    finally:
        await consumer.stop()


async def _reset_ingress_offsets(bootstrap: str) -> None:
    """Commit offset 0 for every input partition: a recreated topic must be read from its start."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"{Settings().group}-ingress",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(name, p)
            for name in topics.INPUT_TOPICS
            for p in sorted(consumer.partitions_for_topic(name) or ())
        ]
        consumer.assign(tps)
        await consumer.commit(dict.fromkeys(tps, 0))
    finally:
        await consumer.stop()


class _Scratch:
    """Fresh, migrated stores on demand; all of them removed when the run ends.

    No ``--database``: SQLite files in a temporary directory. A SQLite URL:
    files in a temporary directory beside that file (same disk). A PostgreSQL
    URL: one schema per store in that database; the database's own tables are
    not touched.
    """

    def __init__(self, database: str | None) -> None:
        from sqlalchemy.engine import URL, make_url
        from sqlalchemy.exc import ArgumentError

        self._dir: Path | None = None
        self._memory = False
        self._pg: URL | None = None
        # id -> (store, its scratch schema, its URL with the password, for a second process)
        self._stores: dict[int, tuple[SqlStore, str | None, str]] = {}
        self._token = uuid.uuid4().hex[:8]
        if database is None:
            self._dir = Path(tempfile.mkdtemp(prefix="sada-bench-"))
            self.describe = f"SQLite files in {self._dir}"
            return
        try:
            url = make_url(database)
        except ArgumentError as e:
            raise SadaError(f"invalid database URL: {e}") from e
        backend = url.get_backend_name()
        if backend == "sqlite":
            if (url.database or "") in ("", ":memory:"):
                self._memory = True
                self.describe = "in-memory SQLite"
            else:
                parent = Path(url.database or ".").resolve().parent
                parent.mkdir(parents=True, exist_ok=True)
                self._dir = Path(tempfile.mkdtemp(prefix="sada-bench-", dir=parent))
                self.describe = f"SQLite files in {self._dir}"
        elif backend == "postgresql":
            self._pg = url
            self.describe = (
                f"scratch schemas sada_bench_{self._token}_* in "
                f"{url.render_as_string(hide_password=True)}"
            )
        else:
            raise SadaError(f"unsupported database {backend!r}: use sqlite or postgresql")

    def __enter__(self) -> _Scratch:
        return self

    def __exit__(self, *exc: object) -> None:
        for store, _schema, _url in list(self._stores.values()):
            self.drop(store)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def new(self, name: str) -> SqlStore:
        from sqlalchemy import create_engine, text

        from sada.consumers.store import SqlStore

        schema: str | None = None
        if self._dir is not None:
            url = f"sqlite:///{self._dir / name}.db"
        elif self._memory:
            url = "sqlite://"
        else:
            assert self._pg is not None
            schema = f"sada_bench_{self._token}_{name}".replace("-", "_")
            admin = create_engine(self._pg)
            try:
                with admin.begin() as conn:
                    conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            except Exception as e:
                raise SadaError(f"cannot create scratch schema {schema}: {e}") from e
            finally:
                admin.dispose()
            given = self._pg.query.get("options") or ""
            if not isinstance(given, str):
                given = " ".join(given)
            options = f"{given} -csearch_path={schema}"
            url = self._pg.update_query_dict({"options": options.strip()}).render_as_string(
                hide_password=False
            )
        store = SqlStore(url)
        store.migrate()
        self._stores[id(store)] = (store, schema, url)
        return store

    def url_for(self, store: SqlStore) -> str | None:
        """The URL another process opens ``store`` with; None for in-memory SQLite."""
        entry = self._stores.get(id(store))
        return None if self._memory or entry is None else entry[2]

    def drop(self, store: SqlStore) -> None:
        """Close ``store`` and remove its file or schema."""
        from sqlalchemy import create_engine, text

        entry = self._stores.pop(id(store), None)
        store.close()
        if entry is None:
            return
        schema = entry[1]
        if schema is not None and self._pg is not None:
            admin = create_engine(self._pg)
            try:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            except Exception as e:  # cleanup must not hide the run's own outcome
                log.warning("could not drop scratch schema %s: %s", schema, e)
            finally:
                admin.dispose()
        elif self._dir is not None:
            path = Path(store.url.removeprefix("sqlite:///"))
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    Path(f"{path}{suffix}").unlink()


def _environment(infra: _Infra, scratch: _Scratch, settings: Settings) -> dict[str, Any]:
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
    root = Path(__file__).resolve().parent.parent
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


def _say(out: TextIO, line: str) -> None:
    print(line, file=out, flush=True)


# -- the load process ----------------------------------------------------------------------


class _Child:
    """The load generator: a spawned process speaking ``(kind, payload)`` messages on a pipe."""

    def __init__(self, process: Any, conn: Connection) -> None:
        self.process = process
        self.conn = conn

    @classmethod
    def start(cls, job: dict[str, Any]) -> _Child:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        process = ctx.Process(
            target=_child_main, args=(child, job), name="sada-bench-load", daemon=True
        )
        process.start()
        child.close()
        return cls(process, parent)

    def __enter__(self) -> _Child:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("stop", None))
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5)
        self.conn.close()

    def send(self, kind: str) -> None:
        self.conn.send((kind, None))

    def _take(self, wanted: str, progress: Progress | None) -> tuple[bool, Any]:
        """One message if there is one: (True, payload) for ``wanted``; progress is absorbed."""
        if not self.conn.poll():
            if not self.process.is_alive() and not self.conn.poll():
                raise SadaError(
                    f"the load process exited (code {self.process.exitcode}) "
                    f"before sending {wanted!r}"
                )
            return False, None
        try:
            kind, payload = self.conn.recv()
        except EOFError as e:
            raise SadaError(f"the load process closed its pipe before sending {wanted!r}") from e
        if kind == "error":
            raise SadaError(f"load process: {payload}")
        if kind == "progress":
            if progress is not None:
                progress.advance(payload - progress.count)
            return False, None
        if kind != wanted:
            raise SadaError(f"load process sent {kind!r} while {wanted!r} was expected")
        return True, payload

    def expect(self, wanted: str, progress: Progress | None = None) -> Any:
        """Block until the ``wanted`` message arrives (the child reports its own failures)."""
        while True:
            got, payload = self._take(wanted, progress)
            if got:
                return payload
            self.conn.poll(0.1)

    async def expect_async(self, wanted: str, worker: Worker, timeout: float | None = None) -> Any:
        """Wait for ``wanted`` without blocking the pipeline's event loop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            got, payload = self._take(wanted, None)
            if got:
                return payload
            if worker.failure:
                raise SadaError(f"the pipeline failed: {worker.failure}")
            if deadline is not None and time.monotonic() > deadline:
                raise SadaError(f"no {wanted!r} from the load process within {timeout:g} s")
            await asyncio.sleep(0.01)


def _child_main(conn: Connection, job: dict[str, Any]) -> None:
    """Entry point of the load process."""
    try:
        config = load_config(Path(job["config"]) if job["config"] else None)
        if job["kind"] == "workload":
            _workload_child(conn, job, config)
        else:
            asyncio.run(_latency_child(conn, job, config))
    except KeyboardInterrupt:
        pass
    except BaseException as e:  # the parent reports it; a traceback here would be lost
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


Record = tuple[str, bytes, bytes]  # topic, key, value


def _workload_child(conn: Connection, job: dict[str, Any], config: Config) -> None:
    n = int(job["events"])
    records, types = generate(config, n, int(job["seed"]), lambda k: conn.send(("progress", k)))
    conn.send(
        (
            "generated",
            {
                "events": len(records),
                "bytes": sum(len(v) for _, _, v in records),
                "types": dict(types),
            },
        )
    )
    conn.send(("raw", asyncio.run(_raw_rates(job["bootstrap"], records, int(job["partitions"])))))
    seconds = asyncio.run(_publish_on_go(conn, job["bootstrap"], records))
    if seconds is not None:
        conn.send(("published", seconds))


def generate(
    config: Config, n: int, seed: int, progress: Callable[[int], None] | None = None
) -> tuple[list[Record], Counter[str]]:
    """The first ``n`` events of a simulated history, encoded, with their topics and keys."""
    from sada.pipeline.domain.logcodec import dumps as encode
    from sada.producers.events import topic_for
    from sada.producers.simulator import simulate

    submissions = _submissions_for(n)
    while True:
        records: list[Record] = []
        types: Counter[str] = Counter()
        for event in simulate(
            config, seed=seed, submissions=submissions, start=WORKLOAD_START, days=WORKLOAD_DAYS
        ):
            records.append((topic_for(event), str(event["subject"]).encode(), encode(event)))
            types[event["type"]] += 1
            if progress is not None and len(records) % 2000 == 0:
                progress(len(records))
            if len(records) >= n:
                if progress is not None:
                    progress(len(records))
                return records, types
        submissions = submissions * 3 // 2 + 1  # the history ran out first: a larger one


def _submissions_for(n: int) -> int:
    """Submissions whose simulated history holds at least ``n`` events, with a margin.

    Measured on the simulator: about ``5.5 + 200 / sqrt(s)`` events per
    submission for ``s`` submissions (the community votes more as it grows).
    """
    x = (-200 + math.sqrt(200**2 + 4 * 5.5 * n)) / (2 * 5.5)
    return max(10, math.ceil(1.25 * x * x))


def _producer(bootstrap: str) -> Any:
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_OPTIONS)


async def _send_all(producer: Any, records: Sequence[Record], topic: str | None = None) -> None:
    futures = [await producer.send(topic or t, value, key=key) for t, key, value in records]
    await asyncio.gather(*futures)


async def _raw_rates(bootstrap: str, records: Sequence[Record], partitions: int) -> dict[str, Any]:
    """Produce then consume ``records`` on a topic of their own, twice; the better of each.

    Two rounds, because one is noisy on a small machine where the broker and
    the client share the cores: the limit is what the pair can do, not what
    one unlucky round did. Produced twice per round: one ``send`` per record,
    as integrators publish (and as the workload is published), and as record
    batches built directly, as ingress writes the canonical log.
    """
    rounds = []
    for _ in range(RAW_ROUNDS):
        round_: dict[str, float] = {}
        for way in ("send", "batches"):
            await asyncio.to_thread(_delete_topics, bootstrap, [RAW_TOPIC])
            await asyncio.to_thread(_create_topic, bootstrap, RAW_TOPIC, partitions)
            producer = _producer(bootstrap)
            await producer.start()
            try:
                await producer.partitions_for(RAW_TOPIC)  # metadata before the clock starts
                started = time.perf_counter()
                if way == "send":
                    await _send_all(producer, records, RAW_TOPIC)
                else:
                    await _send_batches(producer, records, RAW_TOPIC, partitions)
                round_[f"{way}_seconds"] = time.perf_counter() - started
            finally:
                await producer.stop()
            if way == "send":
                consumed, round_["consume_seconds"] = await _consume_all(bootstrap, RAW_TOPIC)
                if consumed != len(records):
                    raise SadaError(
                        f"raw test: produced {len(records)} messages, consumed {consumed}"
                    )
        rounds.append(round_)
    await asyncio.to_thread(_delete_topics, bootstrap, [RAW_TOPIC])
    produce = min(r["send_seconds"] for r in rounds)
    batches = min(r["batches_seconds"] for r in rounds)
    consume = min(r["consume_seconds"] for r in rounds)
    return {
        "messages": len(records),
        "rounds": rounds,
        "produce_rate": len(records) / produce,
        "batch_produce_rate": len(records) / batches,
        "consume_rate": len(records) / consume,
    }


async def _send_batches(
    producer: Any, records: Sequence[Record], topic: str, partitions: int
) -> None:
    """Produce ``records`` as record batches, as ingress writes the log."""
    from sada.pipeline.stages.record_batches import RecordBatches

    batches = RecordBatches(producer, topic)
    for i, (_topic, key, value) in enumerate(records):
        await batches.add(i % partitions, key, value)
    await asyncio.gather(*await batches.send())


async def _consume_all(bootstrap: str, topic: str) -> tuple[int, float]:
    """Read every partition of ``topic`` to its fetch high watermark: (messages, seconds)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        max_partition_fetch_bytes=FETCH_BYTES,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        remaining = set(tps)
        quiet = dict.fromkeys(tps, 0)
        n = 0
        started = time.perf_counter()
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=200, max_records=10_000)
            for msgs in batch.values():
                n += len(msgs)
            for tp in list(remaining):
                hw = consumer.highwater(tp)
                if hw is not None and await consumer.position(tp) >= hw:
                    remaining.discard(tp)
                elif hw is None and not batch.get(tp):
                    quiet[tp] += 1
                    if quiet[tp] >= 3:  # no fetch answer with a high watermark: empty
                        remaining.discard(tp)
        return n, time.perf_counter() - started
    finally:
        await consumer.stop()


async def _publish_on_go(
    conn: Connection, bootstrap: str, records: Sequence[Record]
) -> float | None:
    """Connect, say ``ready``, wait for ``go``, publish everything: the seconds it took."""
    producer = _producer(bootstrap)
    await producer.start()
    try:
        for topic in sorted({t for t, _, _ in records}):
            await producer.partitions_for(topic)
        conn.send(("ready", len(records)))
        kind, _ = await asyncio.to_thread(conn.recv)
        if kind != "go":
            return None
        started = time.perf_counter()
        await _send_all(producer, records)
        return time.perf_counter() - started
    finally:
        await producer.stop()


# -- the latency load ----------------------------------------------------------------------


class _LatencyLoad:
    """Submissions with 49 supporters each, then each one's 50th supporter among filler votes."""

    def __init__(self, config: Config, seed: int, targets: int, fillers: int) -> None:
        from sada.producers.events import topic_for

        self._topic_for = topic_for
        self.rng = random.Random(seed)
        self.unit = _unit_with_parent(config)
        self.threshold = config.ladder[0] if config.ladder else 50
        self.targets = [self._id() for _ in range(targets)]
        self.fillers = [self._id() for _ in range(fillers)]
        self._voters = itertools.count()
        self._codes: set[str] = set()
        self.setup_end = LATENCY_BASE

    def _id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _event(self, type_: str, data: dict[str, Any], at: datetime) -> dict[str, Any]:
        from sada.producers.events import build_event

        return build_event(
            type_, data, source=LATENCY_SOURCE, time=at, rng=self.rng, validate=False
        )

    def _record(self, event: dict[str, Any]) -> Record:
        from sada.pipeline.domain.logcodec import dumps as encode

        return (self._topic_for(event), str(event["subject"]).encode(), encode(event))

    def _created(self, sid: str, at: datetime) -> dict[str, Any]:
        from sada.pipeline.domain.tracking import new_tracking_code

        code = new_tracking_code(self.rng)
        while code in self._codes:
            code = new_tracking_code(self.rng)
        self._codes.add(code)
        return self._event(
            "sada.submission.created",
            {
                "submission_id": sid,
                "tracking_code": code,
                "kind": "suggestion",
                "title": "Longer opening hours for the library",
                "body": "Open the central library until midnight during the exam weeks.",
                "language": "en",
                "channel": "web",
                "unit_id": self.unit,
                "author": {"id": f"bench-author-{sid[:8]}", "role": "student"},
                "anonymous": False,
            },
            at,
        )

    def _vote(self, sid: str, stance: str, at: datetime) -> dict[str, Any]:
        voter = f"bench-voter-{next(self._voters)}"
        return self._event(
            "sada.vote.cast", {"submission_id": sid, "voter_id": voter, "stance": stance}, at
        )

    def setup(self) -> list[Record]:
        """Every submission created; each target one supporter short of the first threshold."""
        from sada.infra.contracts import validate_event

        at = LATENCY_BASE
        step = timedelta(milliseconds=1)
        events: list[dict[str, Any]] = []
        for sid in self.fillers + self.targets:
            events.append(self._created(sid, at))
            at += step
        for sid in self.targets:
            for _ in range(self.threshold - 1):
                events.append(self._vote(sid, "support", at))
                at += step
        # Built without per-event validation (it is slow); one of each kind checks the shape.
        validate_event(events[0])
        validate_event(events[-1])
        self.setup_end = at
        return [self._record(e) for e in events]

    def target_vote(self, i: int, at: datetime) -> Record:
        return self._record(self._vote(self.targets[i], "support", at))

    def filler_vote(self, i: int, at: datetime) -> Record:
        return self._record(self._vote(self.fillers[i % len(self.fillers)], "oppose", at))


def _unit_with_parent(config: Config) -> str:
    """A unit below the root, so a support escalation has somewhere to go."""
    for unit in config.units.values():
        if unit.parent is not None:
            return unit.id
    if not config.units:
        raise SadaError("the configuration has no units")
    return next(iter(config.units))


async def _latency_child(conn: Connection, job: dict[str, Any], config: Config) -> None:
    import orjson
    from aiokafka import AIOKafkaConsumer, TopicPartition

    total = int(job["events"])
    every = int(job["every"])
    rate = float(job["rate"])
    load = _LatencyLoad(config, int(job["seed"]), total // every, int(job["fillers"]))
    setup = load.setup()
    bootstrap = job["bootstrap"]
    producer = _producer(bootstrap)
    await producer.start()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        # The reader should add as little as it can: short fetch waits.
        fetch_max_wait_ms=5,
    )
    await consumer.start()
    try:
        for topic in topics.INPUT_TOPICS:
            await producer.partitions_for(topic)
        conn.send(("ready", len(setup)))
        if (await asyncio.to_thread(conn.recv))[0] != "go":
            return
        started = time.perf_counter()
        await _send_all(producer, setup)
        conn.send(("published", time.perf_counter() - started))
        if (await asyncio.to_thread(conn.recv))[0] != "go":
            return

        tps = [
            TopicPartition(topics.ESCALATIONS, p)
            for p in sorted(consumer.partitions_for_topic(topics.ESCALATIONS) or ())
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        targets = set(load.targets)
        sent: dict[str, float] = {}
        received: dict[str, float] = {}

        async def read() -> None:
            while True:
                batch = await consumer.getmany(timeout_ms=50)
                now = time.perf_counter()
                for msgs in batch.values():
                    for m in msgs:
                        event = orjson.loads(m.value)
                        data = event.get("data") or {}
                        sid = data.get("submission_id")
                        if (
                            sid in targets
                            and data.get("reason") == "support_threshold"
                            and sid not in received
                        ):
                            received[sid] = now

        reader = asyncio.create_task(read())
        futures = []
        paced_base = load.setup_end + timedelta(minutes=1)
        target_i = 0
        i = 0
        start = time.perf_counter()
        while i < total:
            now = time.perf_counter()
            due = min(total, int((now - start) * rate) + 1)
            at = paced_base + timedelta(seconds=now - start)
            while i < due:
                if i % every == every - 1 and target_i < len(load.targets):
                    record = load.target_vote(target_i, at)
                    sent[load.targets[target_i]] = time.perf_counter()
                    target_i += 1
                else:
                    record = load.filler_vote(i, at)
                topic, key, value = record
                futures.append(await producer.send(topic, value, key=key))
                i += 1
            await asyncio.sleep(0.001)
        send_seconds = time.perf_counter() - start
        await asyncio.gather(*futures)
        deadline = time.perf_counter() + LATENCY_DRAIN_SECONDS
        while len(received) < len(sent) and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        latencies = [(received[s] - t) * 1000 for s, t in sent.items() if s in received]
        conn.send(
            (
                "latency",
                {
                    "latencies_ms": latencies,
                    "sent": len(sent),
                    "missing": len(sent) - len(latencies),
                    "events": total,
                    "send_seconds": send_seconds,
                    "offered_rate": total / send_seconds,
                },
            )
        )
    finally:
        await consumer.stop()
        await producer.stop()


# -- output --------------------------------------------------------------------------------


def format_value(value: float) -> str:
    if value == 0:
        return "0"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value >= 0.01 else f"{value:.2e}"


def format_table(report: BenchReport) -> str:
    """The figures as an aligned text table: figure, events, value, unit, target."""
    rows = [("figure", "events", "value", "unit", "target")]
    for f in report.figures:
        target = f.target
        rows.append(
            (
                f.label,
                "" if f.events is None else f"{f.events:,}",
                format_value(f.value),
                f.unit,
                ""
                if target is None
                else f"{target.text} {'met' if target.met(f.value) else 'MISSED'}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = []
    for k, r in enumerate(rows):
        cells = [
            r[0].ljust(widths[0]),
            r[1].rjust(widths[1]),
            r[2].rjust(widths[2]),
            r[3].ljust(widths[3]),
            r[4],
        ]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def timestamped_path(directory: Path, at: datetime) -> Path:
    return directory / f"bench-{at.strftime('%Y%m%dT%H%M%SZ')}.json"

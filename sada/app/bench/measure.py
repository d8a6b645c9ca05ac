"""The phases of a run, each measured with the pipeline in this process: one workload size
(raw broker, end-to-end, memory, replays), growth between sizes, and latency.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from sada.app.bench import load, workers
from sada.app.bench.load import GENERATED, GO, LATENCY, PROGRESS, PUBLISHED, RAW
from sada.app.bench.mixes import describe
from sada.app.bench.plan import (
    LATENCY_DRAIN_SECONDS,
    LATENCY_EVERY,
    LATENCY_FILLERS,
    LIGHT_EVERY,
    LIGHT_RATE,
    LIGHT_SECONDS_SHARE,
    BenchPlan,
)
from sada.app.bench.probe import (
    dlq_reasons,
    measure_memory,
    percentile,
    pipeline_worker,
    until_applied,
)
from sada.app.bench.report import BenchReport
from sada.app.bench.scratch import Infra, Scratch
from sada.app.progress import Progress
from sada.infra.child import READY, Child
from sada.infra.settings import Settings
from sada.pipeline.domain.config import Config
from sada.pipeline.domain.errors import SadaError

if TYPE_CHECKING:  # imported where used: ``sada --help`` need not load the pipeline
    from sada.consumers.store import SqlStore
    from sada.pipeline.worker import Worker

log = logging.getLogger(__name__)


class Bench:
    """The phases, each adding its figures to ``report`` as it goes."""

    def __init__(
        self,
        plan: BenchPlan,
        settings: Settings,
        config: Config,
        infra: Infra,
        scratch: Scratch,
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
            "mix": self.plan.mix,  # every workload of a run, whichever phase starts it
            **extra,
        }

    # -- one workload size ------------------------------------------------------------

    def workload(self, n: int) -> None:
        tag = f"[{n:,}]"
        detail: dict[str, Any] = {}
        self.sizes[n] = detail
        with load.start(self._job("workload", events=n)) as child:
            generating = Progress(self.out, f"{tag} generating events", n)
            generated = child.expect_blocking(
                GENERATED,
                handlers={PROGRESS: lambda k: generating.advance(k - generating.count)},
            )
            generating.done()
            detail["workload"] = {**generated, "mix": self.plan.mix}
            say(self.out, f"{tag} mix {self.plan.mix}: {describe(Counter(generated['types']))}")
            raw = child.expect_blocking(RAW)
            detail["raw"] = raw
            say(
                self.out,
                f"{tag} raw broker: produce {raw['produce_rate']:,.0f} msg/s "
                f"({raw['batch_produce_rate']:,.0f} msg/s as record batches), "
                f"consume {raw['consume_rate']:,.0f} msg/s",
            )
            if self.plan.workers is None:
                live = asyncio.run(self._end_to_end(child, n, detail))
            else:
                live = workers.end_to_end(
                    child,
                    n,
                    self.plan.workers,
                    self.settings,
                    self.infra,
                    self.scratch,
                    detail,
                    self.out,
                )
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
        try:
            if self.plan.workers is None:
                self._inside_figures(n, detail)
            else:
                self._worker_figures(n, detail)
            self._replays(live, n, detail)
        finally:
            self.scratch.drop(live)

    def _worker_figures(self, n: int, detail: dict[str, Any]) -> None:
        """What ``--workers`` measures from outside: CPU per event and the processes' peak RSS."""
        e2e = detail["e2e"]
        count = e2e["workers"]
        self.report.add(
            "e2e_cpu",
            f"CPU per event, {count} worker(s)",
            1e6 * e2e["cpu_seconds"] / n,
            "µs/event",
            n,
        )
        accepted = sum(h["workers"]["ingress"]["accepted"] for h in e2e["healthz"])
        self.report.add("e2e_accepted", "end-to-end events accepted", accepted / n, "share", n)
        self.report.add(
            "peak_rss",
            f"peak RSS, {count} worker(s) summed",
            e2e["peak_rss_bytes"] / 2**20,
            "MiB",
            n,
        )

    def _inside_figures(self, n: int, detail: dict[str, Any]) -> None:
        """What the pipeline in this process shows: decisions, memory, state sizes."""
        e2e = detail["e2e"]
        decided = e2e["projector"]
        self.report.add(
            "e2e_accepted", "end-to-end events accepted", decided["accepted"] / n, "share", n
        )
        self.report.add("e2e_late", "end-to-end events late", decided["late"] / n, "share", n)
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
            "ingress_state",
            "ingress state (all of it; it keeps none per event)",
            memory["ingress_bytes"],
            "bytes",
            n,
        )

    def _fresh_group(self) -> Settings:
        """Settings with a consumer group of its own: each run reads the topics afresh."""
        return self.settings.replace(group=f"sada-bench-{uuid.uuid4().hex[:12]}")

    async def _end_to_end(self, child: Child, n: int, detail: dict[str, Any]) -> SqlStore:
        """Publish the workload into a fresh pipeline; the live store it leaves behind."""
        tag = f"[{n:,}]"
        await asyncio.to_thread(self.infra.reset_topics)
        store = self.scratch.new(f"live-{n}")
        worker = pipeline_worker(
            self._fresh_group(), self.config, store, self.infra, self.scratch.url_for(store)
        )
        await worker.start()
        try:
            await worker.joined()  # timed from a running pipeline, not from its group join
            await child.expect(READY, check=_failed(worker))
            progress = Progress(self.out, f"{tag} end-to-end (events applied)", n)
            started = time.perf_counter()
            child.send(GO)
            ingress_done, finished = await until_applied(worker, n, progress, started)
            progress.done()
            published = await child.expect(PUBLISHED, check=_failed(worker))
            seconds = finished - started
            memory = await measure_memory(worker)
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
            say(
                self.out,
                f"{tag} end-to-end {n / seconds:,.0f} events/s (ingress settled all at "
                f"{ingress_done - started:.2f} s, projector at {seconds:.2f} s; "
                f"publishing took {published:.2f} s); rejected {worker.projector.stats.rejected}, "
                f"late {worker.projector.stats.late}, "
                f"escalations {worker.projector.stats.escalations}",
            )
            if ing.rejected or worker.projector.stats.rejected:
                reasons = await dlq_reasons(self.infra.bootstrap)
                detail["e2e"]["rejected"] = dict(reasons)
                say(self.out, f"{tag} rejected by reason: {dict(reasons)}")
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
        """Cost per event at each size over the smallest, for the run's one mix: 1 is flat."""
        sizes = sorted(self.sizes)
        if len(sizes) < 2:
            return
        small = sizes[0]

        def cost(figure_id: str, n: int) -> float:
            value = next(
                f.value for f in self.report.figures if f.id == figure_id and f.events == n
            )
            return 1.0 / value

        for large in sizes[1:]:
            label = f"{large:,} vs {small:,} events"
            self.report.add(
                "e2e_cost_growth",
                f"end-to-end cost per event, {label}",
                cost("e2e_throughput", large) / cost("e2e_throughput", small),
                "ratio",
                large,
            )
            if self.plan.workers is not None:
                self.report.add(
                    "e2e_cpu_growth",
                    f"CPU per event, {label}",
                    cost("e2e_cpu", small) / cost("e2e_cpu", large),
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
        with load.start(job) as child:
            result = asyncio.run(self._latency(child, detail, tag, seconds))
        lat = sorted(result["latencies_ms"])
        if not lat:
            raise SadaError(f"{tag} no escalation arrived at all")
        p50, p95, p99 = (percentile(lat, q) for q in (0.50, 0.95, 0.99))
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
        say(
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
        self, child: Child, detail: dict[str, Any], tag: str, seconds: float
    ) -> dict[str, Any]:
        await asyncio.to_thread(self.infra.reset_topics)
        store = self.scratch.new(tag.strip("[]"))
        worker = pipeline_worker(
            self._fresh_group(), self.config, store, self.infra, self.scratch.url_for(store)
        )
        await worker.start()
        await worker.joined()
        try:
            setup = await child.expect(READY, check=_failed(worker))
            progress = Progress(self.out, f"{tag} set-up, 49 supporters each (events)", setup)
            started = time.perf_counter()
            await child.request(GO, PUBLISHED, timeout=None, check=_failed(worker))
            _, finished = await until_applied(worker, setup, progress, started)
            progress.done()
            detail["setup"] = {"events": setup, "seconds": finished - started}
            if worker.ingress.stats.rejected:
                reasons = await dlq_reasons(self.infra.bootstrap)
                raise SadaError(f"{tag} set-up events were rejected: {dict(reasons)}")
            say(self.out, f"{tag} sending for {seconds:g} s")
            result: dict[str, Any] = await child.request(
                GO, LATENCY, timeout=seconds + LATENCY_DRAIN_SECONDS + 60, check=_failed(worker)
            )
            detail["projector"] = dataclasses.asdict(worker.projector.stats)
            detail["ingress"] = dataclasses.asdict(worker.ingress.stats)
        finally:
            await worker.stop()
            self.scratch.drop(store)
        return result


def _failed(worker: Worker) -> Callable[[], None]:
    """A check for :meth:`Child.expect`: stop waiting for the load once the pipeline failed."""

    def check() -> None:
        if worker.failure:
            raise SadaError(f"the pipeline failed: {worker.failure}")

    return check


def say(out: TextIO, line: str) -> None:
    print(line, file=out, flush=True)

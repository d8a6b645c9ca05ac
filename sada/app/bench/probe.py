"""The pipeline under test: built as ``sada run`` builds it, watched until it has applied
everything, and its memory measured.
"""

from __future__ import annotations

import asyncio
import math
import resource
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sada.app.bench.plan import STALL_SECONDS
from sada.app.progress import Progress
from sada.infra import topics
from sada.infra.settings import Settings
from sada.infra.sizing import deep_size, fold_state
from sada.pipeline.domain.config import Config
from sada.pipeline.domain.errors import SadaError

if TYPE_CHECKING:  # imported where used: ``sada --help`` need not load the pipeline
    from sada.app.bench.scratch import Infra
    from sada.consumers.store import SqlStore
    from sada.pipeline.worker import Worker


async def dlq_reasons(bootstrap: str) -> Counter[str]:
    """How many records ``sada.dlq`` holds, by reason."""
    from sada.infra.reading import read_topic_to_end

    reasons: Counter[str] = Counter()

    def on_record(_partition: int, m: Any) -> None:
        headers = dict(m.headers or ())
        reasons[headers.get("sada.reason", b"?").decode("utf-8", "replace")] += 1

    await read_topic_to_end(bootstrap, topics.DLQ, on_record)
    return reasons


def pipeline_worker(
    settings: Settings, config: Config, store: SqlStore, infra: Infra, projector_url: str | None
) -> Worker:
    """A worker built as ``sada run`` builds it, with a metrics registry of its own."""
    from prometheus_client import CollectorRegistry

    from sada.infra.metrics import Metrics
    from sada.pipeline.worker import Worker

    metrics = Metrics(CollectorRegistry(), config.units.keys())
    return Worker(settings, config, store, metrics, infra.bootstrap, infra.embedded, projector_url)


async def until_applied(
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


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted values, linearly interpolated."""
    if len(ordered) == 1:
        return ordered[0]
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


async def measure_memory(worker: Worker) -> dict[str, Any]:
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
    # What the ingress member holds: the progress of the partitions it owns, and
    # the offsets it has not committed yet (the stage's books).
    stage = worker.ingress
    ingress_bytes = deep_size(
        [stage.ingress._progress, stage._unsettled, stage._next, stage._committed], set()
    )
    return {
        "peak_rss_mib": (peak + projector_peak) / 2**20,
        "ingress_process_peak_rss_mib": peak / 2**20,
        "projector_process_peak_rss_mib": projector_peak / 2**20,
        **measured,
        "ingress_bytes": ingress_bytes,
    }

"""What the bench measures, and how much: sizes, loads, windows, and the plan of one run."""

from __future__ import annotations

from dataclasses import dataclass

from sada.app.bench.mixes import DEFAULT_MIX, MIXES
from sada.pipeline.domain.errors import SadaError

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
STALL_SECONDS = 120.0  # no progress for this long ends the bench with an error
LATENCY_DRAIN_SECONDS = 30.0
# The light-load reference: a tenth of the load, for half the window, with a
# larger share of target votes so that its percentiles rest on enough samples.
LIGHT_RATE = 200.0
LIGHT_SECONDS_SHARE = 0.5
LIGHT_EVERY = 5


@dataclass(frozen=True, slots=True)
class BenchPlan:
    """The sizes of one run and its latency window, from ``--quick``, ``--full`` or ``--events``."""

    sizes: tuple[int, ...]
    latency_seconds: float
    latency_rate: float = LATENCY_RATE
    seed: int = SEED
    mix: str = DEFAULT_MIX
    # None: the pipeline in the bench's own process (its state and memory measured
    # inside); N: N ``sada run`` processes in one group, measured from outside.
    workers: int | None = None

    @classmethod
    def choose(
        cls,
        *,
        quick: bool,
        full: bool,
        events: int | None,
        mix: str = DEFAULT_MIX,
        workers: int | None = None,
    ) -> BenchPlan:
        if mix not in MIXES:
            raise SadaError(f"--mix must be one of {', '.join(MIXES)}, got {mix!r}")
        if workers is not None and workers < 1:
            raise SadaError(f"--workers must be at least 1, got {workers}")
        if quick and full:
            raise SadaError("--quick and --full exclude each other")
        if events is not None and events < 100:
            raise SadaError(f"--events must be at least 100, got {events}")
        sizes: tuple[int, ...] = FULL_SIZES if full else QUICK_SIZES if quick else DEFAULT_SIZES
        if events is not None:
            sizes = (events,)
        latency = QUICK_LATENCY_SECONDS if quick else LATENCY_SECONDS
        return cls(sizes, latency, mix=mix, workers=workers)

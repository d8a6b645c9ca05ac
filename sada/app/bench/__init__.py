"""``sada bench``: Sada measured against the raw broker it runs on, all in one run.

Every figure comes from the same broker in the same run, so they compare:

- **raw broker**: one aiokafka producer sends N messages of exactly the
  workload's sizes and keys (batched, never awaiting one at a time), then a
  consumer with manual assignment reads them back to the fetch high watermark;
  the better of two rounds each. That is the physical limit of the client and
  the broker on this machine.
- **end-to-end**: N events of the chosen mix (:mod:`.mixes`; the same
  proportions of event types at every size) are generated up front, then
  published raw to the input topics as fast as the producer goes; the clock
  runs from the first publish until the projector has applied every record
  ingress wrote to the canonical log. The shares of
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
- **growth**: the workload figures at each size, and cost per event at each
  size over that at the smallest, so what history costs shows.

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

The modules: :mod:`.plan` (sizes and loads), :mod:`.run` (the run and its
environment), :mod:`.measure` (the phases), :mod:`.probe` (the pipeline under
test), :mod:`.load` (the load process), :mod:`.scratch` (broker topics and
scratch stores), :mod:`.mixes` (the workloads, the same mix at every size),
:mod:`.workers` (``--workers N``: ``sada run`` processes in one group),
:mod:`.report` (figures, targets, the table).
"""

from sada.app.bench.mixes import DEFAULT_MIX, MIXES
from sada.app.bench.plan import (
    DEFAULT_SIZES,
    FULL_SIZES,
    IDLE_SECONDS,
    LATENCY_RATE,
    LATENCY_SECONDS,
    LIGHT_RATE,
    QUICK_LATENCY_SECONDS,
    QUICK_SIZES,
    BenchPlan,
)
from sada.app.bench.report import BenchReport, Figure, Target, format_table, timestamped_path
from sada.app.bench.run import run_bench

__all__ = [
    "DEFAULT_MIX",
    "DEFAULT_SIZES",
    "FULL_SIZES",
    "IDLE_SECONDS",
    "LATENCY_RATE",
    "LATENCY_SECONDS",
    "LIGHT_RATE",
    "MIXES",
    "QUICK_LATENCY_SECONDS",
    "QUICK_SIZES",
    "BenchPlan",
    "BenchReport",
    "Figure",
    "Target",
    "format_table",
    "run_bench",
    "timestamped_path",
]

"""``sada bench``: throughput, latency, replay, memory and growth, against the raw broker.

Prints a table of figures (each with its unit, and its target where there is
one) and writes them as JSON; progress goes to stderr. See :mod:`sada.app.bench`
for how each figure is measured.
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from sada.app.bench import (
    DEFAULT_MIX,
    DEFAULT_SIZES,
    FULL_SIZES,
    IDLE_SECONDS,
    LATENCY_RATE,
    LATENCY_SECONDS,
    LIGHT_RATE,
    MIXES,
    QUICK_LATENCY_SECONDS,
    QUICK_SIZES,
    BenchPlan,
    BenchReport,
    format_table,
    run_bench,
    timestamped_path,
)
from sada.app.commands.common import resolve_config, resolve_settings
from sada.pipeline.domain.errors import SadaError

HELP = "benchmark the pipeline against the raw broker (throughput, latency, replay, memory)"
RESULTS_DIR = Path("bench-results")


def _sizes(sizes: tuple[int, ...]) -> str:
    return ", ".join(f"{n:,}" for n in sizes)


EPILOG = f"""\
All figures come from one run on one broker:
  raw broker produce/consume (msg/s), end-to-end throughput (events/s), its
  ratio to the raw produce rate and the shares of events accepted and late,
  vote -> escalation latency p50/p95/p99 (ms) at {LATENCY_RATE:,.0f} events/s offered
  (and at {LIGHT_RATE:,.0f} events/s, where nothing queues), replay from the archive
  and from the log (records/s), peak RSS (MiB), decision state per submission
  (bytes), and the workload figures at every size so cost per event shows.

Sizes: {_sizes(DEFAULT_SIZES)} events by default; --full adds 1,000,000
({_sizes(FULL_SIZES)}); --quick runs {_sizes(QUICK_SIZES)} and a
{QUICK_LATENCY_SECONDS:g} s latency window instead of {LATENCY_SECONDS:g} s (a few minutes at most).

The pipeline runs in this process with the event clock and an idle time of
{IDLE_SECONDS:g} s (an input partition that delivers nothing for that long stops
holding the clock back), so a burst's tail and the escalation latency are not
dominated by the production default of 5 s.

Workload (--mix): "fixed" gives every submission the same ten-event life
(created, six votes, a retraction, an acknowledgement and an answer), one a
minute; "realistic" is the simulator's history of a community of a fixed size,
30 days after 30 days. Either way the mix is the same at every size (the table
prints it), so cost per event at each size over the smallest shows what
history costs.

--workers N runs the pipeline as N `sada run --bootstrap B --database D`
processes in one consumer group and reports end-to-end events/s and CPU µs per
event (the CPU time of all their processes over the events); the state and
memory figures measured inside the pipeline are left out then, and the latency
phases run in-process as without it.

Without --bootstrap an embedded broker is started and stopped. With
--bootstrap HOST:PORT (or SADA_KAFKA_BOOTSTRAP) the bench runs against that
Kafka: it DELETES AND RECREATES the sada.* topics for every phase, so it
refuses to start if any of them holds records; point it at a scratch cluster.
It leaves them empty at the end.

Without --database every store is a temporary SQLite file. With --database URL
(or SADA_DATABASE_URL) the stores live there: a PostgreSQL URL gets one scratch
schema per store (the role needs CREATE on the database; the schemas are dropped
at the end, the database's own tables are never touched); a SQLite file URL
gets temporary files beside that file.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick", action="store_true", help=f"small sizes ({_sizes(QUICK_SIZES)}), short latency"
    )
    size.add_argument("--full", action="store_true", help=f"sizes {_sizes(FULL_SIZES)}")
    parser.add_argument(
        "--events", type=int, metavar="N", help="one workload size of N events instead"
    )
    parser.add_argument(
        "--mix",
        choices=MIXES,
        default=DEFAULT_MIX,
        help=f"the workload's mix of events, the same at every size (default {DEFAULT_MIX})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="run the pipeline as N `sada run` processes in one group, measured from outside",
    )
    parser.add_argument(
        "--json",
        type=Path,
        metavar="FILE",
        help="write the results here (default bench-results/bench-<UTC timestamp>.json)",
    )
    parser.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        help="an external, scratch Kafka (SADA_KAFKA_BOOTSTRAP); its sada.* topics are recreated",
    )
    parser.add_argument(
        "--database",
        metavar="URL",
        help="PostgreSQL or SQLite URL for the stores (SADA_DATABASE_URL); scratch schemas/files",
    )
    parser.add_argument(
        "--config", metavar="FILE", type=Path, help="organisation config TOML (SADA_CONFIG)"
    )


def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    settings = resolve_settings(args)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = resolve_config(settings)
    plan = BenchPlan.choose(
        quick=args.quick, full=args.full, events=args.events, mix=args.mix, workers=args.workers
    )
    report = BenchReport(plan, datetime.now(UTC))
    path: Path = args.json or timestamped_path(RESULTS_DIR, report.started)
    try:
        run_bench(plan, settings, config, stderr, report)
    except KeyboardInterrupt:
        # A long run stopped by the user still shows what it measured.
        report.details["interrupted"] = True
        if report.figures:
            _write(report, path)
            print(format_table(report), file=stdout)
            print(f"\ninterrupted; partial results: {path}", file=stdout, flush=True)
        raise
    _write(report, path)
    print(format_table(report), file=stdout)
    print(f"\nresults: {path} ({report.seconds:.0f} s)", file=stdout, flush=True)
    return 0


def _write(report: BenchReport, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report.as_json(), indent=2, ensure_ascii=False) + "\n")
    except OSError as e:
        raise SadaError(f"cannot write {path}: {e.strerror or e}") from e

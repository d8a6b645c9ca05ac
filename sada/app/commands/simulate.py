"""``sada simulate``: realistic, repeatable traffic as NDJSON, or published to Kafka.

The same ``--seed`` and arguments give the same events byte for byte: one
compact JSON object with sorted keys per line. ``--publish`` sends them to the
input topics instead (key = submission id, topic by event type), at
``--rate`` events per second if given; ``--out`` then also keeps a copy.
Progress (count, rate, estimated time left) goes to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from sada.app.commands.common import (
    add_bootstrap_argument,
    count,
    positive_float,
    require_bootstrap,
    resolve_config,
    resolve_settings,
)
from sada.app.progress import Progress, duration
from sada.app.times import parse_when
from sada.pipeline.domain.errors import BrokerError, SadaError
from sada.pipeline.domain.logcodec import dumps as encode
from sada.pipeline.domain.model import parse_time
from sada.producers.events import topic_for
from sada.producers.simulator import DEFAULT_SOURCE_PREFIX, simulate

HELP = "generate realistic, repeatable traffic as NDJSON, or publish it to Kafka"

# A Saturday, 08:30 in Tehran: the default history starts as a working week does.
DEFAULT_START = "2026-10-03T05:00:00Z"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--submissions",
        type=count,
        default=200,
        metavar="N",
        help="submissions to create (default 200)",
    )
    parser.add_argument(
        "--days",
        type=positive_float,
        default=14.0,
        metavar="D",
        help="length of the simulated history in days (default 14)",
    )
    parser.add_argument(
        "--start",
        default=DEFAULT_START,
        metavar="ISO",
        help=f"first instant: RFC 3339, a date or a Jalali date (default {DEFAULT_START})",
    )
    parser.add_argument(
        "--out",
        metavar="FILE|-",
        help="write NDJSON here ('-' = stdout; the default unless --publish)",
    )
    parser.add_argument(
        "--publish", action="store_true", help="publish to Kafka instead of printing"
    )
    add_bootstrap_argument(parser)
    parser.add_argument(
        "--rate",
        type=positive_float,
        metavar="EVENTS_PER_S",
        help="at most this many events per second (default: as fast as possible)",
    )
    parser.add_argument(
        "--source-prefix",
        default=DEFAULT_SOURCE_PREFIX,
        metavar="URI",
        help=f"CloudEvents source prefix (default {DEFAULT_SOURCE_PREFIX})",
    )
    parser.add_argument(
        "--config", metavar="FILE", type=Path, help="organisation config TOML (SADA_CONFIG)"
    )


def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    settings = resolve_settings(args)
    config = resolve_config(settings)
    start = parse_when(args.start, "--start", config.calendar.timezone)
    events = simulate(
        config,
        seed=args.seed,
        submissions=args.submissions,
        start=start,
        days=args.days,
        source_prefix=args.source_prefix,
    )
    if args.publish:
        require_bootstrap(
            settings, "--publish needs a Kafka cluster; pass --bootstrap HOST:PORT or set it"
        )
    progress = _Progress(stderr, start, timedelta(days=args.days), args.publish)
    paced = _paced(events, args.rate)
    with ExitStack() as stack:
        out: TextIO | None = None
        if args.out == "-" or (args.out is None and not args.publish):
            out = stdout
        elif args.out is not None:
            try:
                out = stack.enter_context(open(args.out, "w", encoding="utf-8", newline="\n"))
            except OSError as e:
                raise SadaError(f"cannot write {args.out}: {e.strerror}") from e
        try:
            if settings.kafka_bootstrap and args.publish:
                _publish(settings.kafka_bootstrap, settings.partitions, paced, out, progress)
            else:
                assert out is not None
                for event in paced:
                    out.write(encode(event).decode("utf-8") + "\n")
                    progress.update(event)
                out.flush()
        except BrokenPipeError:
            # The reader went away (``sada simulate | head``): not an error.
            _silence_stdout(stdout)
            return 0
    progress.done()
    return 0


def _publish(
    bootstrap: str,
    partitions: int,
    events: Iterable[dict[str, Any]],
    copy: TextIO | None,
    progress: _Progress,
) -> None:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from sada.infra.topics import ensure_topics

    ensure_topics(bootstrap, partitions)
    failures: list[BaseException] = []
    try:
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10)
    except KafkaError as e:
        raise BrokerError(f"cannot connect to {bootstrap}: {e}") from e
    try:
        for event in events:
            value = encode(event)
            future = producer.send(
                topic_for(event), value=value, key=str(event["subject"]).encode("utf-8")
            )
            future.add_errback(failures.append)
            if copy is not None:
                copy.write(value.decode("utf-8") + "\n")
            progress.update(event)
            if failures:
                break
        producer.flush()
    except KafkaError as e:
        raise BrokerError(f"publishing to {bootstrap} failed: {e}") from e
    finally:
        producer.close()
    if failures:
        raise BrokerError(f"publishing to {bootstrap} failed: {failures[0]}")


def _paced(events: Iterable[dict[str, Any]], rate: float | None) -> Iterator[dict[str, Any]]:
    """``events``, no faster than ``rate`` per second (on average, from the first)."""
    if rate is None:
        yield from events
        return
    began = time.monotonic()
    for n, event in enumerate(events):
        wait = began + n / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        yield event


class _Progress:
    """Events so far and their rate; the time left, from how far they are through the window.

    The estimate comes from the events' own times, so no second pass is
    needed to count them first.
    """

    _NOTE_EVERY = 256  # events between estimates: reading an event's time is not free

    def __init__(self, stream: TextIO, start: datetime, span: timedelta, publishing: bool):
        verb = "published" if publishing else "generated"
        self.progress = Progress(stream, f"sada simulate: {verb}", unit=" events", sep=" ")
        self.start = start
        self.span = span.total_seconds()
        self.began = time.monotonic()

    def update(self, event: dict[str, Any]) -> None:
        self.progress.advance()
        if self.progress.count % self._NOTE_EVERY:
            return
        at = parse_time(event["time"])
        fraction = min(1.0, max(0.0, (at - self.start).total_seconds() / self.span))
        if fraction > 0:
            eta = (time.monotonic() - self.began) * (1 - fraction) / fraction
            self.progress.note(f"{fraction:.0%} of the window, ETA {duration(eta)}")

    def done(self) -> None:
        self.progress.note("")
        self.progress.done()


def _silence_stdout(stdout: TextIO) -> None:
    """After a broken pipe, keep the interpreter from failing again when it flushes stdout."""
    if stdout is sys.stdout:
        import os

        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), sys.stdout.fileno())

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
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from sada.app.commands.common import (
    add_bootstrap_argument,
    count,
    positive_float,
    require_bootstrap,
    resolve_config,
    resolve_settings,
)
from sada.pipeline.domain.config import parse_date
from sada.pipeline.domain.errors import BrokerError, ConfigError, SadaError
from sada.pipeline.domain.logcodec import dumps as encode
from sada.pipeline.domain.model import parse_time
from sada.producers.events import topic_for
from sada.producers.simulator import DEFAULT_SOURCE_PREFIX, simulate

HELP = "generate realistic, repeatable traffic as NDJSON, or publish it to Kafka"

# A Saturday, 08:30 in Tehran: the default history starts as a working week does.
DEFAULT_START = "2026-10-03T05:00:00Z"
_PROGRESS_EVERY = 0.25  # seconds between progress updates on a terminal
_LOG_EVERY = 2.0  # ... and when stderr is a file


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
        help=f"first instant: RFC 3339 with offset, or a date (default {DEFAULT_START})",
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
    start = parse_start(args.start, config.calendar.timezone)
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


def parse_start(text: str, timezone: str) -> datetime:
    """An RFC 3339 instant with offset, or a date (midnight in the organisation's time zone)."""
    text = text.strip()
    if len(text) <= 10:
        try:
            day = parse_date(text, "--start")
        except ConfigError as e:
            raise SadaError(f"--start: {text!r} is not an RFC 3339 instant or a date") from e
        return datetime.combine(day, clock_time(0), tzinfo=ZoneInfo(timezone)).astimezone(UTC)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as e:
        raise SadaError(f"--start: {text!r} is not an RFC 3339 instant") from e
    if parsed.tzinfo is None:
        raise SadaError(f"--start: {text!r} has no UTC offset (e.g. end it with Z or +03:30)")
    return parsed.astimezone(UTC)


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
    """A progress line on stderr: events so far, rate, estimated time left.

    The estimate comes from how far the events have got through the simulated
    window, so no second pass is needed to count them first.
    """

    def __init__(self, stream: TextIO, start: datetime, span: timedelta, publishing: bool):
        self.stream = stream
        self.start = start
        self.span = span.total_seconds()
        self.verb = "published" if publishing else "generated"
        self.began = time.monotonic()
        self.last = self.began
        self.count = 0
        self.fraction = 0.0
        self.tty = bool(getattr(stream, "isatty", lambda: False)())

    def update(self, event: dict[str, Any]) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self.last < (_PROGRESS_EVERY if self.tty else _LOG_EVERY):
            return
        self.last = now
        at = parse_time(event["time"])
        self.fraction = min(1.0, max(0.0, (at - self.start).total_seconds() / self.span))
        self._write(now, final=False)

    def done(self) -> None:
        self._write(time.monotonic(), final=True)

    def _write(self, now: float, final: bool) -> None:
        elapsed = max(now - self.began, 1e-9)
        line = f"sada simulate: {self.verb} {self.count} events, {self.count / elapsed:,.0f}/s"
        if final:
            line += f", done in {elapsed:.1f}s"
        elif self.fraction > 0:
            eta = elapsed * (1 - self.fraction) / self.fraction
            line += f", {self.fraction:.0%} of the window, ETA {_duration(eta)}"
        if self.tty:
            self.stream.write("\r\x1b[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _silence_stdout(stdout: TextIO) -> None:
    """After a broken pipe, keep the interpreter from failing again when it flushes stdout."""
    if stdout is sys.stdout:
        import os

        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), sys.stdout.fileno())

"""``sada broker``: run the embedded Tansu broker in the foreground until SIGINT or SIGTERM.

Once the broker answers (and the topics exist, unless ``--no-topics``) it
prints exactly one line, ``broker listening on 127.0.0.1:PORT``, which other
tools may wait for.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TextIO

from sada.app.commands.common import positive_int
from sada.infra.broker import EmbeddedBroker
from sada.infra.settings import Settings
from sada.infra.topics import ensure_topics
from sada.pipeline.domain.errors import BrokerError

HELP = "run the embedded Kafka-compatible broker (Tansu) until interrupted"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", type=_port, metavar="N", help="port on 127.0.0.1 (default: a free one)"
    )
    parser.add_argument("--no-topics", action="store_true", help="do not create Sada's topics")
    parser.add_argument(
        "--partitions",
        type=positive_int,
        metavar="N",
        help="partitions per topic when creating them (SADA_PARTITIONS, default 4)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        metavar="DIR",
        help="write the broker's own log to DIR/tansu.log (default: discard it)",
    )
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the broker to answer (default 30)",
    )


def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    settings = Settings.from_env()
    partitions = args.partitions or settings.partitions
    with _stop_requested() as stop:
        broker = EmbeddedBroker(args.port, broker_bin=settings.broker_bin, log_dir=args.log_dir)
        try:
            broker.start(timeout=args.start_timeout)
            if not args.no_topics:
                ensure_topics(broker.bootstrap, partitions)
            if stop.is_set():  # interrupted while starting
                return 0
            print(f"broker listening on {broker.bootstrap}", file=stdout, flush=True)
            while not stop.wait(0.5):
                code = broker.exit_code()
                if code is not None:
                    reason = broker.last_output()
                    raise BrokerError(
                        f"tansu exited unexpectedly with code {code}"
                        + (f": {reason}" if reason else "")
                    )
        finally:
            broker.stop()
    return 0


@contextmanager
def _stop_requested() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while the block runs; previous handlers restored after."""
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is not threading.main_thread():
        # Signal handlers can only be installed from the main thread.
        yield stop
        return
    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text}")
    return value

"""``sada publish FILE``: send the CloudEvents of an NDJSON file (``-``: standard input) to Kafka.

Each non-blank line is one event. A line may leave out what
:func:`~sada.producers.sdk.complete_event` can fill in (``id``, ``time``,
``specversion``, ``subject``, ``dataschema``, ``datacontenttype``, a new
submission's ``submission_id`` and ``tracking_code``; ``source`` from
``--source``); what it gives is kept. Each completed event is validated as
ingress validates it: an invalid line is not sent and is reported with its
line number and reason. Person ids are pseudonymised before sending, with
``SADA_PSEUDONYM_KEY`` or the key of the embedded default's data directory.

``--raw`` sends every line unchanged and unchecked (to the input topic of its
``type`` when it names one, else to ``--topic``), so that ingress judges it:
the way to put known-bad input on the topics and watch it reach ``sada.dlq``.

Exit status 0 when every line was sent and acknowledged, 1 when any was
rejected or not delivered.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

import orjson

from sada.app.commands.common import add_bootstrap_argument, require_bootstrap, resolve_settings
from sada.infra import contracts, topics
from sada.infra.pseudonym_key import resolve_key
from sada.pipeline.domain.errors import EventRejectedError, SadaError
from sada.pipeline.domain.reasons import Reason
from sada.producers.privacy import Pseudonymizer
from sada.producers.sdk import DeliveryError, SadaProducer, complete_event

HELP = "send the CloudEvents of an NDJSON file (- for stdin) to Kafka, validated"

PROGRESS_SECONDS = 1.0
SHOWN_REJECTIONS = 100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", metavar="FILE", help="NDJSON file, one CloudEvent a line; - for stdin"
    )
    add_bootstrap_argument(parser)
    parser.add_argument(
        "--source", metavar="URI", help="the CloudEvents source of events that give none"
    )
    parser.add_argument(
        "--raw",
        action="store_true",
        help="send every line unchanged and unchecked, for ingress to judge (tests sada.dlq)",
    )
    parser.add_argument(
        "--topic",
        default=topics.SUBMISSIONS,
        choices=topics.INPUT_TOPICS,
        help=f"with --raw: topic of lines that name no event type (default {topics.SUBMISSIONS})",
    )


@dataclass
class _Tally:
    sent: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    shown: int = 0


def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    settings = resolve_settings(args)
    tally = _Tally()
    with ExitStack() as stack:
        stream = _open(args.file, stack)  # a missing file is the first thing to hear of
        bootstrap = require_bootstrap(settings)
        # The deployment's key: given, or the one the embedded default keeps in the
        # data directory. Without either, ingress pseudonymises what it reads.
        key = resolve_key(settings, create=False)
        pseudonymizer = Pseudonymizer(key.encode("utf-8")) if key and not args.raw else None
        producer = SadaProducer(
            bootstrap,
            source=args.source,
            pseudonymizer=pseudonymizer,
            max_event_bytes=settings.max_event_bytes,
            client_id="sada-publish",
        )
        try:
            _send_lines(stream, producer, args, settings.max_event_bytes, tally, stderr)
            try:
                producer.flush()
            except DeliveryError as e:
                tally.sent -= e.failed
                tally.failed.update(e.reasons)
        finally:
            # Everything sent has been flushed (or has failed) by now.
            with suppress(SadaError):
                producer.close()
    _summary(tally, stdout)
    return 1 if tally.rejected or tally.failed else 0


def _send_lines(
    stream: IO[bytes],
    producer: SadaProducer,
    args: argparse.Namespace,
    max_event_bytes: int,
    tally: _Tally,
    stderr: TextIO,
) -> None:
    last_report = time.monotonic()
    for number, raw in enumerate(stream, start=1):
        line = raw.removesuffix(b"\n").removesuffix(b"\r")
        if not line.strip():
            continue
        if args.raw:
            topic, key = _raw_destination(line, args.topic)
            producer.publish_raw(topic, line, key)
            tally.sent += 1
        else:
            try:
                producer.publish(_event_of(line, args.source, max_event_bytes))
            except EventRejectedError as e:
                tally.rejected[e.reason] += 1
                _show_rejection(number, e, tally, stderr)
            else:
                tally.sent += 1
        now = time.monotonic()
        if now - last_report >= PROGRESS_SECONDS:
            last_report = now
            print(
                f"line {number}: sent {tally.sent}, rejected {sum(tally.rejected.values())}",
                file=stderr,
                flush=True,
            )


def _event_of(line: bytes, source: str | None, max_event_bytes: int) -> dict[str, Any]:
    partial = contracts.decode(line, max_event_bytes)
    if "source" not in partial and source is None:
        raise EventRejectedError(
            Reason.INVALID_ENVELOPE, "source: missing; give it in the event or with --source"
        )
    return complete_event(partial, source=source)


def _raw_destination(line: bytes, fallback: str) -> tuple[str, bytes | None]:
    """The input topic named by the line's ``type`` and its submission id, if it has them."""
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return fallback, None
    if not isinstance(value, dict):
        return fallback, None
    topic = (
        contracts.TOPIC_OF_TYPE.get(value["type"]) if isinstance(value.get("type"), str) else None
    )
    if topic not in topics.INPUT_TOPICS:
        topic = fallback
    subject = value.get("subject")
    data = value.get("data")
    if not isinstance(subject, str) and isinstance(data, dict):
        subject = data.get("submission_id")
    key = subject.encode("utf-8", "surrogatepass") if isinstance(subject, str) else None
    return str(topic), key


def _show_rejection(number: int, e: EventRejectedError, tally: _Tally, stderr: TextIO) -> None:
    if tally.shown < SHOWN_REJECTIONS:
        print(f"line {number}: {e.reason}: {e.detail}", file=stderr)
    elif tally.shown == SHOWN_REJECTIONS:
        print(f"(more than {SHOWN_REJECTIONS} rejections: counted, not shown)", file=stderr)
    tally.shown += 1


def _summary(tally: _Tally, stdout: TextIO) -> None:
    line = f"sent {tally.sent}, rejected {sum(tally.rejected.values())}"
    if tally.failed:
        line += f", not delivered {sum(tally.failed.values())}"
    print(line, file=stdout)
    for reason, count in sorted(tally.rejected.items()):
        print(f"  {reason}: {count}", file=stdout)
    for error, count in sorted(tally.failed.items()):
        print(f"  not delivered ({error}): {count}", file=stdout)


def _open(name: str, stack: ExitStack) -> IO[bytes]:
    if name == "-":
        return sys.stdin.buffer
    try:
        return stack.enter_context(Path(name).open("rb"))
    except OSError as e:
        raise SadaError(f"cannot read {name}: {e.strerror}") from e

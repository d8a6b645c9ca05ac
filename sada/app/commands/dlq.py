"""``sada dlq``: the rejected inputs of ``sada.dlq``, for a person: reason, origin, time, excerpt.

Each record of ``sada.dlq`` is an input as it arrived, with headers saying why
it was rejected (``sada.reason``, ``sada.detail``) and where it came from
(``sada.topic``, ``sada.partition``, ``sada.offset``). This reads the topic
from its beginning to its current end, keeps what the filters ask for
(``--reason``, ``--since``, ``--until``; times as every time option takes
them) and prints one line per record, or one JSON object per line. The
excerpt hides person ids (``author.id``, ``voter_id``): a rejected input was
never pseudonymised.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sada.app.commands.common import (
    add_bootstrap_argument,
    positive_int,
    require_bootstrap,
    resolve_config,
    resolve_settings,
)
from sada.app.times import parse_when, show_time
from sada.infra import topics
from sada.pipeline.domain.errors import BrokerError
from sada.pipeline.domain.model import format_time

HELP = "list rejected inputs (sada.dlq): reason, origin, time, excerpt; filter; text or JSON"
EXCERPT_CHARS = 120
HIDDEN = "<person id>"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_bootstrap_argument(parser)
    parser.add_argument(
        "--reason", action="append", metavar="REASON", help="only this reason (repeatable)"
    )
    parser.add_argument("--since", metavar="TIME", help="rejected at or after (instant or date)")
    parser.add_argument("--until", metavar="TIME", help="rejected before (instant or date)")
    parser.add_argument("--format", choices=["text", "json"], default="text")
    parser.add_argument("--limit", type=positive_int, metavar="N", help="at most N, the latest")
    parser.add_argument(
        "--config", metavar="FILE", type=Path, help="organisation config TOML (SADA_CONFIG)"
    )


@dataclass(frozen=True, slots=True)
class Rejected:
    partition: int
    offset: int
    at: datetime
    reason: str
    detail: str
    origin: str
    value: bytes | None

    def as_json(self) -> dict[str, Any]:
        event = _event(self.value)
        return {
            "time": format_time(self.at),
            "reason": self.reason,
            "detail": self.detail,
            "origin": self.origin,
            "id": event.get("id") if isinstance(event.get("id"), str) else None,
            "source": event.get("source") if isinstance(event.get("source"), str) else None,
            "type": event.get("type") if isinstance(event.get("type"), str) else None,
            "excerpt": excerpt(self.value),
            "dlq": f"{topics.DLQ}[{self.partition}]@{self.offset}",
        }


def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    settings = resolve_settings(args)
    tz = resolve_config(settings).calendar.timezone
    since = parse_when(args.since, "--since", tz) if args.since else None
    until = parse_when(args.until, "--until", tz) if args.until else None
    bootstrap = require_bootstrap(settings)
    rows = [
        r
        for r in read_dlq(bootstrap, settings.connect_timeout)
        if (not args.reason or r.reason in args.reason)
        and (since is None or r.at >= since)
        and (until is None or r.at < until)
    ]
    rows.sort(key=lambda r: (r.at, r.partition, r.offset))
    if args.limit:
        rows = rows[-args.limit :]
    for r in rows:
        if args.format == "json":
            print(json.dumps(r.as_json(), ensure_ascii=False), file=stdout)
        else:
            print(
                f"{show_time(r.at, tz)}  {r.reason}  from {r.origin}: {r.detail}\n"
                f"    {excerpt(r.value)}",
                file=stdout,
            )
    if args.format == "text":
        print(f"{len(rows)} rejected input(s)", file=stdout)
    return 0


def read_dlq(bootstrap: str, timeout: float) -> list[Rejected]:
    """Every record of ``sada.dlq``, beginning to the current end (manual assignment: no group)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            group_id=None,
            request_timeout_ms=max(int(timeout * 1000), 10_000) + 1000,
        )
    except KafkaError as e:
        raise BrokerError(f"cannot read {topics.DLQ} at {bootstrap}: {e}") from e
    try:
        parts = consumer.partitions_for_topic(topics.DLQ)
        if not parts:
            raise BrokerError(f"no topic {topics.DLQ} at {bootstrap} (sada topics creates it)")
        tps = [TopicPartition(topics.DLQ, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        found: list[Rejected] = []
        deadline = time.monotonic() + max(30.0, timeout)
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise BrokerError(f"reading {topics.DLQ} at {bootstrap} timed out")
            for batch in consumer.poll(timeout_ms=500).values():
                found.extend(_rejected(m) for m in batch)
        return found
    except KafkaError as e:
        raise BrokerError(f"reading {topics.DLQ} at {bootstrap} failed: {e}") from e
    finally:
        consumer.close()


def _rejected(m: Any) -> Rejected:
    headers = {k: v.decode("utf-8", "replace") for k, v in (m.headers or [])}
    topic = headers.get("sada.topic", "?")
    origin = f"{topic}[{headers.get('sada.partition', '?')}]@{headers.get('sada.offset', '?')}"
    return Rejected(
        partition=m.partition,
        offset=m.offset,
        at=datetime.fromtimestamp(m.timestamp / 1000, UTC),
        reason=headers.get("sada.reason", "unknown"),
        detail=headers.get("sada.detail", ""),
        origin=origin,
        value=m.value,
    )


def _event(value: bytes | None) -> dict[str, Any]:
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def excerpt(value: bytes | None) -> str:
    """The input's first characters on one line, with person ids hidden."""
    if value is None:
        return "(no value)"
    event = _event(value)
    data = event.get("data")
    if isinstance(data, dict):
        data = dict(data)
        if "voter_id" in data:
            data["voter_id"] = HIDDEN
        if isinstance(data.get("author"), dict) and "id" in data["author"]:
            data["author"] = {**data["author"], "id": HIDDEN}
        text = json.dumps({**event, "data": data}, ensure_ascii=False)
    elif event:
        text = json.dumps(event, ensure_ascii=False)
    else:
        text = value.decode("utf-8", "replace")
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"

"""``sada topics``: create Sada's missing topics on a Kafka cluster and show what is there."""

from __future__ import annotations

import argparse
from typing import TextIO

from sada.app.commands.common import (
    positive_int,
    require_bootstrap,
    resolve_settings,
)
from sada.infra.topics import ensure_topics

HELP = "create Sada's topics on a Kafka cluster if missing, and list them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (SADA_KAFKA_BOOTSTRAP)"
    )
    parser.add_argument(
        "--partitions",
        type=positive_int,
        metavar="N",
        help="partitions for topics that are created (SADA_PARTITIONS, default 4)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the cluster (default 30)",
    )


def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    settings = resolve_settings(args)
    bootstrap = require_bootstrap(settings)
    partitions = args.partitions or settings.partitions
    statuses = ensure_topics(bootstrap, partitions, timeout=args.timeout)
    rows = [("topic", "partitions", "status")]
    for s in statuses:
        note = f" (wanted {s.wanted})" if s.status == "fewer-partitions" else ""
        rows.append((s.name, str(s.partitions), s.status + note))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for name, count, status in rows:
        print(f"{name:<{widths[0]}}  {count:>{widths[1]}}  {status}", file=stdout)
    return 0

"""``sada topics``: create Sada's missing topics on a Kafka cluster and show what is there."""

from __future__ import annotations

import argparse
from typing import TextIO

from sada.app.commands.common import (
    add_bootstrap_argument,
    positive_int,
    require_bootstrap,
    resolve_settings,
)
from sada.infra.topics import ensure_topics

HELP = "create Sada's topics on a Kafka cluster if missing, and list them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_bootstrap_argument(parser)
    parser.add_argument(
        "--partitions",
        type=positive_int,
        metavar="N",
        help="partitions for topics that are created (SADA_PARTITIONS, default 4)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="how long to wait for the cluster (SADA_CONNECT_TIMEOUT, default 5)",
    )


def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    settings = resolve_settings(args)
    bootstrap = require_bootstrap(settings)
    partitions = args.partitions or settings.partitions
    statuses = ensure_topics(
        bootstrap, partitions, timeout=args.timeout or settings.connect_timeout
    )
    rows = [("topic", "partitions", "status")]
    for s in statuses:
        note = f" (wanted {s.wanted})" if s.status == "fewer-partitions" else ""
        rows.append((s.name, str(s.partitions), s.status + note))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for name, count, status in rows:
        print(f"{name:<{widths[0]}}  {count:>{widths[1]}}  {status}", file=stdout)
    return 0

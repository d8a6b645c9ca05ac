"""``sada replay``: rebuild state from the archive or the canonical log into a fresh store.

``--as-of TIME`` prints the state of every submission at that instant;
``--verify`` compares the rebuilt store with the live one and exits 1 listing
every difference.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TextIO

from sada.app.commands.common import (
    add_connection_arguments,
    require_bootstrap,
    resolve_config,
    resolve_settings,
)
from sada.app.progress import Progress
from sada.app.replay import Record, archive_records, compare, log_records, replay
from sada.consumers.store import SqlStore
from sada.pipeline.domain.errors import SadaError
from sada.pipeline.domain.memstore import MemoryStore
from sada.pipeline.domain.model import format_time, parse_time
from sada.pipeline.domain.rules import Rules

HELP = "rebuild state from the archive or the canonical log (--as-of, --verify)"
KEY_WIDTH = {"votes": 2, "archive": 2, "merkle_nodes": 2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
    parser.add_argument(
        "--source",
        choices=["archive", "log"],
        default="archive",
        help="replay the archive in the database (default) or the canonical log in Kafka",
    )
    parser.add_argument("--into", metavar="URL", help="database to rebuild into (must be empty)")
    parser.add_argument("--as-of", metavar="TIME", help="state at this RFC 3339 instant")
    parser.add_argument(
        "--verify", action="store_true", help="compare with the live store; exit 1 on difference"
    )
    parser.add_argument("--limit", type=int, default=50, help="differences to list (default 50)")


def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    settings = resolve_settings(args)
    rules = Rules.from_config(resolve_config(settings))
    live = SqlStore(settings.effective_database_url)
    as_of = _instant(args.as_of) if args.as_of else None
    records: list[Record] | None = None
    total: int | None = None
    if args.source == "log":
        records = log_records(
            require_bootstrap(settings, "--source log needs --bootstrap HOST:PORT or this variable")
        )
        total = len(records)
    else:
        total = sum(c.next_offset for c in live.checkpoints()) or None
    source = records if records is not None else archive_records(live)
    progress = Progress(stderr, "replayed", total)

    if as_of is not None and not args.verify:
        mem = MemoryStore()
        replay(source, rules, mem, as_of=as_of, on_progress=progress.advance)
        progress.done()
        for _partition, state in sorted(mem.states.values(), key=lambda ps: ps[1].tracking_code):
            line = {
                "tracking_code": state.tracking_code,
                "submission_id": state.submission_id,
                "status": state.status,
                "unit_id": state.unit_id,
                "level": state.level,
                "support": state.support,
                "oppose": state.oppose,
                "as_of": format_time(as_of),
            }
            print(json.dumps(line, ensure_ascii=False), file=stdout)
        return 0

    with tempfile.TemporaryDirectory(prefix="sada-replay-") as tmp:
        url = args.into or f"sqlite:///{Path(tmp) / 'replay.db'}"
        target = SqlStore(url)
        target.migrate()
        if any(c.next_offset for c in target.checkpoints()):
            raise SadaError(f"{url} is not empty: replay needs a fresh database")
        stats = replay(source, rules, target, as_of=as_of, on_progress=progress.advance)
        progress.done()
        print(
            f"replayed {stats.records} records of {stats.partitions} partitions, "
            f"{stats.escalations} escalations, into {url}",
            file=stdout,
        )
        if not args.verify:
            return 0
        diffs = compare(live.dump(), target.dump(), KEY_WIDTH)
        target.close()
    if not diffs:
        print("verify: replay equals the live store, row for row", file=stdout)
        return 0
    print(f"verify: {len(diffs)} differences", file=stdout)
    for d in diffs[: args.limit]:
        print(f"  {d.table} {d.key}: live={d.live} replayed={d.replayed}", file=stdout)
    return 1


def _instant(text: str) -> datetime:
    try:
        return parse_time(text)
    except ValueError as e:
        raise SadaError(f"--as-of: {text!r} is not an RFC 3339 instant with offset") from e

"""``sada replay``: rebuild state from the archive or the canonical log into a fresh store.

``--as-of TIME`` (an instant, a date or a Jalali date) prints the state of
every submission at that instant. ``--verify`` first checks the archive's
hash chains (a broken one is refused, naming the record), then compares the
rebuilt store with the live one and exits 1 on any difference, counted per
table, the first ones readable. With ``--as-of`` it compares with what the
live store held at that instant: its archive up to where the replay
stopped (the live store keeps no earlier states of submissions).

Read-only on the live store: a missing or empty one is a one-line error.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, TextIO

from sada.app.commands.common import (
    add_connection_arguments,
    open_existing_store,
    require_bootstrap,
    resolve_config,
    resolve_settings,
)
from sada.app.progress import Progress
from sada.app.replay import Record, archive_records, compare, log_records, replay
from sada.app.times import parse_when
from sada.app.verify_report import print_report
from sada.consumers.store import SqlStore
from sada.infra.redact import mask_url
from sada.pipeline.domain.errors import BrokerError, SadaError
from sada.pipeline.domain.memstore import MemoryStore
from sada.pipeline.domain.model import format_time
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
    parser.add_argument(
        "--as-of",
        metavar="TIME",
        help="state at this instant: RFC 3339, a date, or a Jalali date (00:00 local)",
    )
    parser.add_argument(
        "--verify", action="store_true", help="compare with the live store; exit 1 on difference"
    )
    parser.add_argument("--limit", type=int, default=50, help="differences to list (default 50)")


def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    settings = resolve_settings(args)
    config = resolve_config(settings)
    rules = Rules.from_config(config)
    as_of = parse_when(args.as_of, "--as-of", config.calendar.timezone) if args.as_of else None
    records: list[Record] | None = None
    total: int | None = None
    if args.source == "log":
        bootstrap = require_bootstrap(
            settings, "--source log needs --bootstrap HOST:PORT or this variable"
        )
        try:
            records = log_records(bootstrap)
        except SadaError:
            raise
        except Exception as e:  # the Kafka client's, whatever its kind: one line
            raise BrokerError(f"reading the canonical log at {bootstrap} failed: {e}") from e
        total = len(records)
    live = open_existing_store(settings) if args.verify or args.source == "archive" else None
    if live is not None and args.source == "archive":
        total = sum(c.next_offset for c in live.checkpoints()) or None
        if total is None:
            raise SadaError("the archive is empty: nothing to replay")
        if args.verify:
            _check_chain(live)
    if live is not None and records is not None:
        # The log runs on while the store is read (watermarks at a stop, events after
        # its last checkpoint): compare what both have seen, the log up to the store's
        # checkpoints, and say how much of the log that leaves out.
        ends = {c.partition: c.next_offset for c in live.checkpoints()}
        applied = [r for r in records if r[1] < ends.get(r[0], 0)]
        if len(applied) < len(records):
            print(
                f"verify: the log up to the live store's checkpoints; {len(records) - len(applied)}"
                " later records are not compared",
                file=stdout,
            )
        records, total = applied, len(applied)
    if live is None:
        live = SqlStore("sqlite://")  # --source log without --verify reads no live store
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
            raise SadaError(f"{mask_url(url)} is not empty: replay needs a fresh database")
        stats = replay(source, rules, target, as_of=as_of, on_progress=progress.advance)
        progress.done()
        print(
            f"replayed {stats.records} records of {stats.partitions} partitions, "
            f"{stats.escalations} escalations, into {mask_url(url)}",
            file=stdout,
        )
        if not args.verify:
            return 0
        expected, got = live.dump(), target.dump()
        target.close()
    if as_of is not None:
        expected, got = _as_of(expected, stats.replayed_to), _as_of(got, stats.replayed_to)
        print(
            f"verify as of {format_time(as_of)}: comparing {', '.join(sorted(expected))} "
            "(the live store keeps no earlier states of submissions)",
            file=stdout,
        )
    diffs = compare(expected, got, KEY_WIDTH)
    if not diffs:
        print("verify: replay equals the live store, row for row", file=stdout)
        return 0
    print_report(diffs, args.limit, stdout)
    return 1


def _check_chain(live: SqlStore) -> None:
    """Refuse to replay a broken archive: the first bad record is what an auditor needs."""
    report = live.verify_archive()
    if not report.ok:
        assert report.first_bad is not None
        partition, offset, reason = report.first_bad
        raise SadaError(
            f"the archive is broken at partition {partition} offset {offset}: {reason}; "
            "nothing was replayed (sada audit verify tells the same)"
        )


def _as_of(
    dump: dict[str, list[tuple[Any, ...]]], replayed_to: dict[int, int]
) -> dict[str, list[tuple[Any, ...]]]:
    """What the store held at the instant: its archive up to where the replay stopped."""
    rows = dump.get("archive", [])
    return {"archive": [r for r in rows if int(str(r[1])) < replayed_to.get(int(str(r[0])), 0)]}

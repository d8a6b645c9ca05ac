"""``sada report``: each unit's week or month — received, answered in time, late, escalated,
satisfaction, rank and change of rank — as HTML (with charts) or CSV, from the store.

The ranking is the dashboard's (:func:`sada.consumers.snapshot.rank_units`)
over the period. The period is the one holding the pipeline clock, or
``--at DATE``; Persian reports (the default) use Jalali months.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from typing import TextIO
from zoneinfo import ZoneInfo

from sada.app.commands.common import add_connection_arguments, resolve_config, resolve_settings
from sada.consumers.dashboard.report_html import render_report
from sada.consumers.report import PERIODS, build_report, report_csv
from sada.consumers.store import SqlStore
from sada.pipeline.domain.config import parse_date
from sada.pipeline.domain.errors import ConfigError, QueryError, SadaError
from sada.pipeline.domain.text import ascii_digits

HELP = "a per-unit report of a week or a month: received, in time, late, escalated, rank"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
    parser.add_argument("--period", choices=PERIODS, default="week", help="week (default) or month")
    parser.add_argument("--unit", help="only this unit's row (ranks stay among all units)")
    parser.add_argument("--format", choices=("html", "csv"), default="html", help="html or csv")
    parser.add_argument("--lang", choices=("fa", "en"), default="fa", help="fa (Jalali) or en")
    parser.add_argument("--at", metavar="DATE", help="a day in the period (Gregorian or Jalali)")
    parser.add_argument("--output", "-o", metavar="FILE", type=Path, help="write here, not stdout")


def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    settings = resolve_settings(args)
    config = resolve_config(settings)
    at = None
    if args.at:
        try:
            day = parse_date(ascii_digits(args.at), "--at")
        except ConfigError as e:
            raise QueryError("--at", f"{args.at!r} is not a YYYY-MM-DD date") from e
        at = datetime(day.year, day.month, day.day, 12, tzinfo=ZoneInfo(config.calendar.timezone))
    with SqlStore(settings.effective_database_url) as store:
        report = build_report(store, config, args.period, unit=args.unit, lang=args.lang, at=at)
    text = report_csv(report) if args.format == "csv" else render_report(report)
    if args.output is None:
        stdout.write(text)
        return 0
    try:
        args.output.write_text(text, encoding="utf-8")
    except OSError as e:
        raise SadaError(f"cannot write {args.output}: {e.strerror}") from e
    print(f"report written to {args.output}", file=stdout)
    return 0

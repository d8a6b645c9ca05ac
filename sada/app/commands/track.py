"""``sada track CODE``: what an author sees for a tracking code, in the calendar's local time.

Read-only: a missing or empty store is a one-line error, never a new database.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from sada.app.commands.common import (
    add_connection_arguments,
    open_existing_store,
    resolve_config,
    resolve_settings,
)
from sada.app.times import show_time
from sada.pipeline.domain.errors import NotFoundError, SadaError
from sada.pipeline.domain.tracking import parse_tracking_code

HELP = "show a submission by tracking code (Latin, Persian or Arabic-Indic digits)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
    parser.add_argument("code", help="tracking code, e.g. 7816838… or ۷۸۱۶۸۳۸…")
    parser.add_argument("--json", action="store_true", help="print the API's JSON")


def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    code = parse_tracking_code(args.code)
    if code is None:
        raise SadaError(f"{args.code!r} is not a tracking code (8-12 digits, valid check digit)")
    settings = resolve_settings(args)
    tz = resolve_config(settings).calendar.timezone
    with open_existing_store(settings) as store:
        found = store.submission_by_code(code)
    if found is None:
        raise NotFoundError(f"no submission has tracking code {code}")
    if args.json:
        json.dump(found, stdout, ensure_ascii=False, indent=2)
        print(file=stdout)
        return 0

    def p(line: str) -> None:
        print(line, file=stdout)

    def _when(value: Any) -> str:
        return show_time(value, tz)

    p(f"tracking code  {found['tracking_code']}")
    p(f"status         {found['status']}  ({found['kind']}, via {found['channel']})")
    p(f"unit           {found['unit_id']}  (level {found['level']})")
    p(f"support        {found['support']} for, {found['oppose']} against")
    p(f"created        {_when(found['created_at'])}")
    deadlines = found["deadlines"]
    p(f"first response due  {_when(deadlines['first_response'])}")
    p(f"resolution due      {_when(deadlines['resolution'])}")
    for r in found["responses"]:
        target = f" -> {r['referred_to_unit_id']}" if r.get("referred_to_unit_id") else ""
        p(f"response       {_when(r['at'])}  {r['unit_id']}: {r['kind']}{target}")
    for e in found["escalations"]:
        p(
            f"escalated      {_when(e['time'])}  {e['from_unit_id']} -> {e['to_unit_id']} "
            f"({e['reason']})"
        )
    return 0

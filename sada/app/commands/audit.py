"""``sada audit``: prove the archive unaltered (verify); a submission's history (timeline)."""

from __future__ import annotations

import argparse
import csv
import json
from typing import Any, TextIO

from sada.app.commands.common import (
    add_connection_arguments,
    open_existing_store,
    resolve_config,
    resolve_settings,
)
from sada.app.times import show_time
from sada.consumers.store import SqlStore
from sada.pipeline.domain.calendar import to_jalali
from sada.pipeline.domain.errors import NotFoundError, SadaError, StoreError
from sada.pipeline.domain.model import parse_time
from sada.pipeline.domain.tracking import parse_tracking_code

HELP = "verify the archive's hash chain, or print a submission's full timeline"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = sub.add_parser("verify", help="re-compute the archive's hash chains")
    add_connection_arguments(verify)
    timeline = sub.add_parser("timeline", help="every event of one submission, in order")
    add_connection_arguments(timeline)
    timeline.add_argument("code", help="tracking code (Latin, Persian or Arabic-Indic digits)")
    timeline.add_argument("--format", choices=["text", "json", "csv"], default="text")


def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    settings = resolve_settings(args)
    with open_existing_store(settings) as store:
        if args.audit_command == "verify":
            return _verify(store, stdout)
        tz = resolve_config(settings).calendar.timezone
        return _timeline(store, args.code, args.format, tz, stdout)


def _verify(store: SqlStore, stdout: TextIO) -> int:
    report = store.verify_archive()
    if report.records == 0:
        raise StoreError("the archive is empty: nothing to verify")
    if report.ok:
        print(
            f"archive ok: {report.records} records in {report.partitions} partition chains",
            file=stdout,
        )
        return 0
    assert report.first_bad is not None
    partition, offset, reason = report.first_bad
    print(
        f"archive BROKEN at partition {partition} offset {offset}: {reason} "
        f"({report.records} records checked)",
        file=stdout,
    )
    return 1


def timeline_rows(store: SqlStore, code_text: str) -> list[dict[str, Any]]:
    code = parse_tracking_code(code_text)
    if code is None:
        raise SadaError(f"{code_text!r} is not a tracking code")
    found = store.submission_by_code(code)
    if found is None:
        raise NotFoundError(f"no submission has tracking code {code}")
    rows: list[dict[str, Any]] = []
    for e in store.timeline(found["submission_id"]):
        ce = e["event"] or {}
        rows.append(
            {
                "at": e["at"],
                "time": e["time"],
                "type": e["type"],
                "actor": _actor(ce),
                "change": _change(ce, e),
                "late": e["late"],
                "event_id": ce.get("id"),
                "source": ce.get("source"),
            }
        )
    for esc in found["escalations"]:
        rows.append(
            {
                "at": esc["time"],
                "time": esc["time"],
                "type": "sada.submission.escalated",
                "actor": "pipeline",
                "change": (
                    f"escalated {esc['from_unit_id']} -> {esc['to_unit_id']} "
                    f"(level {esc['from_level']} -> {esc['to_level']}, {esc['reason']}, "
                    f"support {esc['support']})"
                ),
                "late": False,
                "event_id": esc["event_id"],
                "source": "/sada/pipeline",
            }
        )
    # Stable: events keep log order; an escalation follows what happened at its instant.
    rows.sort(key=lambda r: r["at"])
    for r in rows:
        r["at_jalali"] = to_jalali(parse_time(r["at"])) if r["at"] else None
    return rows


def _timeline(store: SqlStore, code: str, fmt: str, tz: str, stdout: TextIO) -> int:
    rows = timeline_rows(store, code)
    if fmt == "json":
        json.dump(rows, stdout, ensure_ascii=False, indent=2)
        print(file=stdout)
    elif fmt == "csv":
        writer = csv.DictWriter(stdout, fieldnames=list(rows[0].keys()) if rows else ["at"])
        writer.writeheader()
        writer.writerows([{k: _csv_value(v) for k, v in r.items()} for r in rows])
    else:
        for r in rows:
            late = " (late)" if r["late"] else ""
            print(f"{show_time(r['at'], tz)}  {r['actor']:<22} {r['change']}{late}", file=stdout)
    return 0


def _csv_value(value: Any) -> Any:
    """CSV spells booleans as JSON does (``true``/``false``), not as Python."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _actor(ce: dict[str, Any]) -> str:
    data = ce.get("data") or {}
    t = ce.get("type", "")
    if t == "sada.submission.created":
        role = (data.get("author") or {}).get("role", "author")
        return f"author ({role})"
    if t.startswith("sada.vote."):
        return "voter"
    if t == "sada.response.posted":
        return f"unit {data.get('unit_id')}"
    if t == "sada.satisfaction.rated":
        return "author"
    if t == "sada.submission.withdrawn":
        return "author"
    return "unknown"


def _change(ce: dict[str, Any], e: dict[str, Any]) -> str:
    data = ce.get("data") or {}
    t = e["type"]
    if t == "sada.submission.created":
        text = f"created {data.get('kind')} at {data.get('unit_id')} via {data.get('channel')}"
    elif t == "sada.vote.cast":
        text = f"{data.get('stance')} vote"
    elif t == "sada.vote.retracted":
        text = "vote retracted"
    elif t == "sada.response.posted":
        text = f"{data.get('kind')}"
        if data.get("referred_to_unit_id"):
            text += f" -> {data['referred_to_unit_id']}"
    elif t == "sada.satisfaction.rated":
        text = f"rated {data.get('rating')}/5"
    elif t == "sada.submission.withdrawn":
        text = "withdrawn"
    else:
        text = t
    if not e["effective"]:
        text += f" — no effect: {e['note']}"
    return text

"""``sada audit``: prove the archive unaltered; keys, checkpoints, receipts; a submission's history.

- ``verify [--checkpoints FILE] [--key KEY]``: the hash chains, and each
  partition's Merkle tree recomputed from the records against every signed
  checkpoint (the store's, and a saved file's);
- ``key``: the deployment's verifier key (``--generate FILE``, ``--rotate FILE``);
- ``checkpoints --save FILE`` / ``--sign``: keep the signed heads, or sign now;
- ``receipt verify FILE --key KEY``: an author's receipt, offline;
- ``timeline CODE``: every event of one submission, in order.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any, TextIO

from sada.app import proofs
from sada.app.commands.common import (
    add_connection_arguments,
    open_existing_store,
    resolve_config,
    resolve_settings,
)
from sada.app.times import show_time
from sada.consumers.store import SqlStore
from sada.consumers.tree_audit import audit_store
from sada.pipeline.domain.calendar import to_jalali
from sada.pipeline.domain.errors import NotFoundError, SadaError, StoreError
from sada.pipeline.domain.model import parse_time
from sada.pipeline.domain.tracking import parse_tracking_code

HELP = "verify the archive (chains, trees, checkpoints), keys, receipts, a submission's timeline"
KEY_HELP = "verifier key (name+hash+base64), or a file holding it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    verify = sub.add_parser(
        "verify", help="re-compute the archive's hash chains and Merkle trees, check checkpoints"
    )
    add_connection_arguments(verify)
    verify.add_argument(
        "--checkpoints",
        metavar="FILE",
        type=Path,
        help="also hold the checkpoints saved in FILE (sada audit checkpoints --save) to it",
    )
    verify.add_argument(
        "--key",
        action="append",
        metavar="KEY",
        help=f"{KEY_HELP}; repeatable (default: the keys the database lists)",
    )

    key = sub.add_parser("key", help="print the deployment's verifier key; make or rotate keys")
    add_connection_arguments(key)
    action = key.add_mutually_exclusive_group()
    action.add_argument("--all", action="store_true", help="every key, retired ones too")
    action.add_argument(
        "--generate", metavar="FILE", type=Path, help="write a new signing key to FILE (0600)"
    )
    action.add_argument(
        "--rotate",
        metavar="FILE",
        type=Path,
        help="make FILE's key the deployment's signing key (old checkpoints stay verifiable)",
    )
    key.add_argument("--name", help="key name for --generate (default: <deployment>/<date>)")

    checkpoints = sub.add_parser("checkpoints", help="save the signed checkpoints, or sign now")
    add_connection_arguments(checkpoints)
    checkpoints.add_argument(
        "--save", metavar="FILE", type=Path, help="append the latest signed checkpoints to FILE"
    )
    checkpoints.add_argument(
        "--url", help="read them from a running Sada's HTTP API (http://HOST:PORT)"
    )
    checkpoints.add_argument(
        "--sign", action="store_true", help="sign the current tree heads now (needs the key)"
    )

    receipt = sub.add_parser("receipt", help="check an author's receipt offline")
    receipt_sub = receipt.add_subparsers(dest="receipt_command", metavar="ACTION", required=True)
    receipt_verify = receipt_sub.add_parser("verify", help="verify a receipt (JSON) with the key")
    receipt_verify.add_argument("file", type=Path, help="the receipt, as the API returned it")
    receipt_verify.add_argument("--key", required=True, help=KEY_HELP)

    timeline = sub.add_parser("timeline", help="every event of one submission, in order")
    add_connection_arguments(timeline)
    timeline.add_argument("code", help="tracking code (Latin, Persian or Arabic-Indic digits)")
    timeline.add_argument("--format", choices=["text", "json", "csv"], default="text")


def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    command = args.audit_command
    if command == "receipt":
        return proofs.verify_receipt_file(args.file, args.key, stdout)
    settings = resolve_settings(args)
    if command == "key" and args.generate is not None:
        return proofs.generate_key(args.generate, args.name, settings, stdout)
    if command == "checkpoints" and args.url is not None and not args.sign:
        if args.save is None:
            raise SadaError("--url goes with --save FILE")
        return proofs.save_checkpoints(None, args.url, args.save, stdout)
    store = open_existing_store(settings)  # never created here: read-only but for keys
    try:
        if command == "verify":
            return _verify(store, args.checkpoints, args.key or [], stdout)
        if command == "key":
            if args.rotate is not None:
                store.migrate()
                return proofs.rotate_key(store, args.rotate, settings, stdout)
            return proofs.print_key(store, args.all, stdout)
        if command == "checkpoints":
            if not args.sign and args.save is None:
                raise SadaError("say what to do: --save FILE, --sign, or both")
            if args.sign:
                proofs.sign_now(store, settings, stdout)
            if args.save is not None:
                return proofs.save_checkpoints(store, None, args.save, stdout)
            return 0
        tz = resolve_config(settings).calendar.timezone
        return _timeline(store, args.code, args.format, tz, stdout)
    finally:
        store.close()


def _verify(store: SqlStore, saved: Path | None, keys: list[str], stdout: TextIO) -> int:
    if not any(c.next_offset for c in store.checkpoints()):
        raise StoreError("the archive is empty: nothing to verify")
    held = proofs.read_saved(saved) if saved is not None else []
    verifiers = [proofs.parse_key(k) for k in keys] or None
    return proofs.print_tree_report(audit_store(store, held, verifiers), stdout)


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
    if t in ("sada.submission.followed", "sada.submission.unfollowed"):
        return "follower"
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
    elif t == "sada.submission.followed":
        text = "followed"
    elif t == "sada.submission.unfollowed":
        text = "unfollowed"
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

"""What ``sada audit`` does with keys, checkpoints and receipts (the command parses, this acts).

- ``key``: print the deployment's verifier key; make a new key file; rotate to one;
- ``checkpoints``: sign the current tree heads now; append the latest signed
  checkpoints to an auditor's file (from the database or a running Sada's API);
- ``receipt verify``: check an author's receipt offline with the verifier key alone;
- the checkpoints half of ``verify``: hold saved checkpoints to the archive.

A saved-checkpoints file is JSON Lines, one signed checkpoint per line
(``{"partition", "tree_size", "root_hash", "key", "signed_at", "checkpoint",
"saved_at"}``); only ``checkpoint``, the signed note, is trusted when checking.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sada.consumers.store import SqlStore
from sada.consumers.tree_audit import HeldCheckpoint, TreeReport
from sada.infra.settings import Settings
from sada.infra.signing import default_key_name, load_signer, read_signer, write_signer
from sada.pipeline.domain.errors import SadaError, SignatureError
from sada.pipeline.domain.notary import due, key_label, sign_head
from sada.pipeline.domain.note import Signer, Verifier
from sada.pipeline.domain.receipt import ReceiptCheck, verify_receipt


def parse_key(text: str) -> Verifier:
    """A verifier key given on the command line: the key text itself, or a file holding it."""
    path = Path(text)
    if "+" not in text or path.is_file():
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise SadaError(f"--key: neither a verifier key nor a readable file: {text}") from e
    try:
        return Verifier.parse(text)
    except SignatureError as e:
        raise SadaError(f"--key: {e}") from e


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SadaError(f"cannot read {path}: {e.strerror}") from e
    except ValueError as e:
        raise SadaError(f"{path} is not JSON: {e}") from e


# -- keys ---------------------------------------------------------------------------------------


def print_key(store: SqlStore, all_keys: bool, stdout: TextIO) -> int:
    keys = store.signing_keys()
    if not keys:
        raise SadaError("no signing key is registered yet: start a worker (sada run) first")
    for k in keys if all_keys else keys[:1]:
        retired = f"  (retired {k['retired_at']})" if all_keys and k["retired_at"] else ""
        print(f"{k['verifier_key']}{retired}", file=stdout)
    return 0


def generate_key(path: Path, name: str | None, settings: Settings, stdout: TextIO) -> int:
    signer = Signer.generate(name or default_key_name(settings.deployment))
    write_signer(path, signer)
    print(signer.verifier.text(), file=stdout)
    return 0


def rotate_key(store: SqlStore, path: Path, settings: Settings, stdout: TextIO) -> int:
    signer = read_signer(path)
    old = store.rotate_signing_key(signer.verifier, settings.deployment)
    print(
        f"signing key is now {key_label(signer)}"
        + (f" (was {old}; its checkpoints stay verifiable)" if old else ""),
        file=stdout,
    )
    print(signer.verifier.text(), file=stdout)
    return 0


# -- checkpoints ----------------------------------------------------------------------------


def sign_now(store: SqlStore, settings: Settings, stdout: TextIO) -> int:
    """Sign every tree head that grew since this key's last checkpoint (published by a worker)."""
    signer = load_signer(settings)
    store.register_signing_key(signer.verifier, settings.deployment)
    todo = due(store.tree_heads(), store.latest_signed_sizes(key_label(signer)))
    now = datetime.now(UTC)
    signed = [sign_head(signer, settings.deployment, head, now) for head in todo]
    store.add_signed_checkpoints(signed)
    for c in signed:
        print(f"signed partition {c.partition} at tree size {c.size}", file=stdout)
    if not signed:
        print("nothing to sign: every tree head has its checkpoint", file=stdout)
    return 0


def _fetch_latest(url: str) -> list[dict[str, Any]]:
    target = url.rstrip("/") + "/api/v1/audit/checkpoint"
    try:
        with urllib.request.urlopen(target, timeout=30) as response:
            body = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise SadaError(f"cannot read {target}: {e}") from e
    items = body.get("checkpoints") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise SadaError(f"{target} did not answer with checkpoints")
    return [c for c in items if isinstance(c, dict)]


def save_checkpoints(store: SqlStore | None, url: str | None, path: Path, stdout: TextIO) -> int:
    """Append the latest signed checkpoint of every partition to ``path``."""
    if url is not None:
        latest = _fetch_latest(url)
    else:
        assert store is not None
        latest = [c.as_json() for c in store.latest_checkpoints()]
    if not latest:
        raise SadaError("no signed checkpoint yet: nothing to save")
    saved_at = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    lines = [
        json.dumps({**{k: v for k, v in c.items() if k != "seq"}, "saved_at": saved_at})
        for c in latest
    ]
    try:
        with path.open("a", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
    except OSError as e:
        raise SadaError(f"cannot append to {path}: {e.strerror}") from e
    for c in latest:
        print(
            f"saved partition {c.get('partition')} at tree size {c.get('tree_size')}", file=stdout
        )
    return 0


def read_saved(path: Path) -> list[HeldCheckpoint]:
    """The checkpoints of a saved file, each named by its line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SadaError(f"cannot read {path}: {e.strerror}") from e
    held = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"checkpoint at {path.name} line {n}"
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise SadaError(f"{path} line {n} is not JSON: {e}") from e
        note = obj.get("checkpoint") if isinstance(obj, dict) else None
        if not isinstance(note, str):
            raise SadaError(f"{path} line {n} holds no 'checkpoint'")
        held.append(HeldCheckpoint(note, where))
    if not held:
        raise SadaError(f"{path} holds no checkpoint")
    return held


def print_tree_report(report: TreeReport, stdout: TextIO) -> int:
    chain = report.chain
    if not chain.ok:
        assert chain.first_bad is not None
        partition, offset, reason = chain.first_bad
        print(
            f"archive BROKEN at partition {partition} offset {offset}: {reason} "
            f"({chain.records} records checked)",
            file=stdout,
        )
        return 1
    if report.first_bad is not None:
        print(f"archive BROKEN: {report.first_bad[1]}", file=stdout)
        return 1
    print(
        f"archive ok: {chain.records} records in {chain.partitions} partition chains; "
        f"their Merkle trees agree with {report.checked} signed checkpoints",
        file=stdout,
    )
    return 0


# -- receipts -------------------------------------------------------------------------------


def verify_receipt_file(path: Path, key: str, stdout: TextIO) -> int:
    receipt = _read_json(path)
    if not isinstance(receipt, dict):
        raise SadaError(f"{path} is not a receipt (a JSON object)")
    try:
        check: ReceiptCheck = verify_receipt(receipt, [parse_key(key)])
    except SignatureError as e:
        print(f"receipt INVALID: {e}", file=stdout)
        return 1
    print(
        f"receipt ok: tracking code {check.tracking_code} recorded"
        + (f" at {check.event_time}" if check.event_time else "")
        + f", leaf {check.leaf_index} of {check.origin}, in a tree of {check.tree_size}"
        f" signed by {check.key}",
        file=stdout,
    )
    return 0

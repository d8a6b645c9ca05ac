"""An author's receipt: the archived creation record, its place in the tree, and a signed head.

A receipt is a JSON object that proves, to anyone holding the deployment's
verifier key and nothing else, that the record was archived at leaf
``leaf_index`` of partition ``partition``'s tree, and that the deployment
signed a tree of ``tree_size`` leaves containing it::

    {"format": "sada-receipt/1", "tracking_code": "…", "submission_id": "…",
     "partition": P, "offset": O, "leaf_index": I, "tree_size": N,
     "record": base64(archived record bytes), "inclusion_proof": [base64, …],
     "checkpoint": "<signed note>", "key": "<name>+<key ID>", "recorded_at": "…"}

``record`` is the archive's exact bytes (a canonical-log record, whose
``event`` is the submission's CloudEvent); the leaf hash is computed from it,
never taken on trust. :func:`verify_receipt` checks everything but whether
the key is the right one: that is what the verifier key given to it is for.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from sada.pipeline.domain.errors import SignatureError
from sada.pipeline.domain.merkle import leaf_hash, verify_inclusion
from sada.pipeline.domain.note import Verifier, open_note
from sada.pipeline.domain.tlog_checkpoint import TreeHead

FORMAT = "sada-receipt/1"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def build_receipt(
    *,
    tracking_code: str,
    submission_id: str,
    partition: int,
    offset: int,
    leaf_index: int,
    record: bytes,
    tree_size: int,
    proof: Sequence[bytes],
    checkpoint: str,
    key: str,
) -> dict[str, Any]:
    event = recorded_event(record)
    return {
        "format": FORMAT,
        "tracking_code": tracking_code,
        "submission_id": submission_id,
        "partition": partition,
        "offset": offset,
        "leaf_index": leaf_index,
        "tree_size": tree_size,
        "recorded_at": (event or {}).get("time"),
        "record": _b64(record),
        "inclusion_proof": [_b64(h) for h in proof],
        "checkpoint": checkpoint,
        "key": key,
    }


def recorded_event(record: bytes) -> dict[str, Any] | None:
    """The CloudEvent inside an archived record, or None if it holds none."""
    try:
        obj = orjson.loads(record)
    except orjson.JSONDecodeError:
        return None
    event = obj.get("event") if isinstance(obj, dict) else None
    return event if isinstance(event, dict) else None


@dataclass(frozen=True, slots=True)
class ReceiptCheck:
    tracking_code: str
    partition: int
    leaf_index: int
    tree_size: int
    origin: str
    key: str  # the key that signed the checkpoint
    event_time: str | None


def _field(receipt: Mapping[str, Any], name: str, kind: type) -> Any:
    value = receipt.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise SignatureError(f"receipt: {name!r} is missing or not {kind.__name__}")
    return value


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise SignatureError(f"receipt: {what} is not base64") from e


def verify_receipt(receipt: Mapping[str, Any], verifiers: Iterable[Verifier]) -> ReceiptCheck:
    """Check a receipt offline; what it proves, or :class:`SignatureError` saying what fails."""
    if receipt.get("format") != FORMAT:
        raise SignatureError(f"not a receipt: 'format' is not {FORMAT!r}")
    partition = _field(receipt, "partition", int)
    index = _field(receipt, "leaf_index", int)
    size = _field(receipt, "tree_size", int)
    code = _field(receipt, "tracking_code", str)
    record = _unb64(_field(receipt, "record", str), "the record")
    proof_texts = _field(receipt, "inclusion_proof", list)
    proof = [_unb64(p, "a proof hash") for p in proof_texts if isinstance(p, str)]
    if len(proof) != len(proof_texts):
        raise SignatureError("receipt: the inclusion proof holds a value that is not base64 text")
    note = open_note(_field(receipt, "checkpoint", str), verifiers)
    head = TreeHead.parse(note.text)
    if head.partition() != partition:
        raise SignatureError(
            f"receipt: the checkpoint is of {head.origin}, the receipt of partition {partition}"
        )
    if head.size != size:
        raise SignatureError(f"receipt: tree size {size}, but the checkpoint says {head.size}")
    if not verify_inclusion(index, size, leaf_hash(record), proof, head.root):
        raise SignatureError(
            f"receipt: the record is not at leaf {index} of the signed tree "
            f"(partition {partition}, size {size}): the inclusion proof does not verify"
        )
    event = recorded_event(record)
    data = (event or {}).get("data")
    if (
        event is None
        or event.get("type") != "sada.submission.created"
        or not isinstance(data, dict)
        or data.get("tracking_code") != code
    ):
        raise SignatureError(
            f"receipt: the record is not the creation of the submission with tracking code {code}"
        )
    signer = note.signatures[0]
    return ReceiptCheck(
        code,
        partition,
        index,
        size,
        head.origin,
        f"{signer.name}+{signer.key_id:08x}",
        event.get("time") if isinstance(event.get("time"), str) else None,
    )

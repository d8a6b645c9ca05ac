"""The printable receipt page: what was recorded and when, the tracking code in both digit sets.

The page shows the receipt the JSON form carries, for an author to print or
save; it is rendered from ``templates/receipt.html`` with autoescape on, so
the submission's own text (title, unit) reaches the page as text. What makes
it proof is the JSON, or the checkpoint and proof printed here:
``sada audit receipt verify FILE --key KEY``, or any RFC 9162 / C2SP
verifier, checks it with the deployment's public key alone.
"""

from __future__ import annotations

import base64
from datetime import datetime
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, Template

from sada.pipeline.domain.calendar import to_jalali
from sada.pipeline.domain.receipt import recorded_event

_PERSIAN = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
_KINDS = {
    "complaint": "شکایت",
    "criticism": "انتقاد",
    "suggestion": "پیشنهاد",
    "question": "پرسش",
}


def persian_digits(text: str) -> str:
    return text.translate(_PERSIAN)


@cache
def _template() -> Template:
    env = Environment(
        loader=PackageLoader("sada.consumers", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
    )
    return env.get_template("receipt.html")


def _when(text: str | None) -> str:
    if not text:
        return "—"
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return f"{persian_digits(to_jalali(moment))}  ({text})"


def render(receipt: dict[str, Any], verifier_key: str | None) -> str:
    """The HTML page of ``receipt`` (a :func:`~sada.pipeline.domain.receipt.build_receipt`)."""
    code = str(receipt["tracking_code"])
    event = recorded_event(base64.b64decode(receipt["record"])) or {}
    found = event.get("data")
    data: dict[str, Any] = found if isinstance(found, dict) else {}
    kind = str(data.get("kind", ""))
    return _template().render(
        code=code,
        code_fa=persian_digits(code),
        record_rows=[
            ("موضوع", str(data.get("title", "—")), False),
            ("نوع", _KINDS.get(kind, kind or "—"), False),
            ("واحد", str(data.get("unit_id", "—")), True),
            ("زمان ثبت", _when(receipt.get("recorded_at")), False),
            ("شناسه", str(receipt.get("submission_id", "")), True),
        ],
        proof_rows=[
            ("بخش (partition)", receipt["partition"]),
            ("شمارهٔ برگ (leaf index)", receipt["leaf_index"]),
            ("اندازهٔ درخت (tree size)", receipt["tree_size"]),
            ("کلید امضا (key)", receipt.get("key", "")),
        ],
        checkpoint=receipt["checkpoint"],
        proof="\n".join(receipt["inclusion_proof"]) or "(empty: the tree holds this record alone)",
        verifier_key=verifier_key,
        json_link=f"/api/v1/submissions/{code}/receipt?format=json",
    )

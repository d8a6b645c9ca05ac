"""The printable receipt page: what was recorded and when, the tracking code in both digit sets.

The page shows the same receipt the JSON form carries, for an author to print
or save. What makes it proof is the JSON (or the checkpoint and proof printed
here): ``sada audit receipt verify FILE --key KEY``, or any RFC 9162 / C2SP
verifier, checks it with the deployment's public key alone.
"""

from __future__ import annotations

import base64
import html
from datetime import datetime
from typing import Any

from sada.pipeline.domain.calendar import to_jalali
from sada.pipeline.domain.receipt import recorded_event

_PERSIAN = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
_KINDS = {
    "complaint": "شکایت",
    "criticism": "انتقاد",
    "suggestion": "پیشنهاد",
    "question": "پرسش",
}

_STYLE = """
body { font-family: Vazirmatn, Tahoma, "DejaVu Sans", sans-serif; margin: 2rem auto;
       max-width: 46rem; color: #111; line-height: 1.6; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; }
.code { font-size: 2rem; letter-spacing: .15rem; font-weight: bold; margin: .2rem 0; }
.latin { direction: ltr; unicode-bidi: embed; font-family: "DejaVu Sans Mono", monospace; }
table { border-collapse: collapse; width: 100%; margin: 1rem 0; }
th, td { text-align: start; padding: .3rem .5rem; border-bottom: 1px solid #ccc;
         vertical-align: top; }
pre { direction: ltr; text-align: left; white-space: pre-wrap; word-break: break-all;
      background: #f5f5f5; padding: .6rem; font-size: .8rem; }
.note { font-size: .9rem; color: #444; }
@media print { a { color: inherit; text-decoration: none; } .noprint { display: none; } }
"""


def persian_digits(text: str) -> str:
    return text.translate(_PERSIAN)


def _row(label: str, value: str, latin: bool = False) -> str:
    cls = ' class="latin"' if latin else ""
    return f"<tr><th>{label}</th><td{cls}>{html.escape(value)}</td></tr>"


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
    rows = [
        _row("موضوع", str(data.get("title", "—"))),
        _row("نوع", _KINDS.get(kind, kind or "—")),
        _row("واحد", str(data.get("unit_id", "—")), latin=True),
        _row("زمان ثبت", _when(receipt.get("recorded_at"))),
        _row("شناسه", str(receipt.get("submission_id", "")), latin=True),
    ]
    proof_rows = [
        _row("بخش (partition)", str(receipt["partition"]), latin=True),
        _row("شمارهٔ برگ (leaf index)", str(receipt["leaf_index"]), latin=True),
        _row("اندازهٔ درخت (tree size)", str(receipt["tree_size"]), latin=True),
        _row("کلید امضا (key)", str(receipt.get("key", "")), latin=True),
    ]
    proof = "\n".join(receipt["inclusion_proof"]) or "(empty: the tree holds this record alone)"
    key_line = (
        f"<p class='note'>کلید عمومی (verifier key):</p><pre>{html.escape(verifier_key)}</pre>"
        if verifier_key
        else ""
    )
    json_link = f"/api/v1/submissions/{html.escape(code)}/receipt?format=json"
    return f"""<!doctype html>
<html lang="fa" dir="rtl">
<head><meta charset="utf-8"><title>رسید ثبت {html.escape(persian_digits(code))}</title>
<style>{_STYLE}</style></head>
<body>
<h1>رسید ثبت — Receipt of record</h1>
<p>کد رهگیری / tracking code</p>
<p class="code">{html.escape(persian_digits(code))}</p>
<p class="code latin">{html.escape(code)}</p>
<table>{"".join(rows)}</table>
<h2>گواهی ثبت در بایگانی</h2>
<p class="note">این رسید نشان می‌دهد که رویداد ثبت این درخواست در بایگانی امضاشده آمده است؛
هر کسی با کلید عمومی می‌تواند آن را بدون دسترسی به سامانه بررسی کند.</p>
<table>{"".join(proof_rows)}</table>
<p class="note">Checkpoint (C2SP signed note):</p>
<pre>{html.escape(str(receipt["checkpoint"]))}</pre>
<p class="note">Inclusion proof (RFC 9162, base64):</p>
<pre>{html.escape(proof)}</pre>
{key_line}
<p class="note latin">Verify offline: save the JSON receipt
(<a href="{json_link}">{json_link}</a>) and run
<code>sada audit receipt verify receipt.json --key KEY</code>.</p>
<p class="noprint"><button onclick="window.print()">چاپ / Print</button></p>
</body>
</html>
"""

"""The proof routes of the HTTP API, and what they serve checked by Sada's CLI and by Go's code.

A receipt asked for right after its submission was archived makes the notary
sign on the spot; the receipt then verifies offline (``sada audit receipt
verify``) and with ``golang.org/x/mod/sumdb`` (tests/goverify). The
checkpoints, key and proofs the API serves verify the same ways.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from proof_support import DEPLOYMENT, Deployment, make_deployment, run_cli
from test_goverify import GoVerify, goverify  # noqa: F401  (the fixture)

from sada.consumers.audit_api import routes
from sada.consumers.receipt_page import render
from sada.pipeline.domain.merkle import leaf_hash, verify_consistency, verify_inclusion
from sada.pipeline.domain.note import Verifier, open_note
from sada.pipeline.domain.receipt import build_receipt
from sada.pipeline.domain.tlog_checkpoint import TreeHead
from sada.pipeline.stages.notary_stage import NotaryStage

Call = Callable[[str], Awaitable[tuple[int, Any, str]]]


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    d = make_deployment(tmp_path, monkeypatch)
    d.feed(0.5)
    return d


def _serve(d: Deployment, scenario: Callable[[Call, NotaryStage], Awaitable[None]]) -> None:
    """Run ``scenario`` against the proof routes of ``d``'s store, with a notary (no broker)."""
    store = d.open()
    store.register_signing_key(d.signer.verifier, DEPLOYMENT)
    # Without start() the notary has no producer: it signs and stores, publishes nothing.
    notary = NotaryStage(store, d.signer, DEPLOYMENT, "unused:0", 60.0)

    async def main() -> None:
        app = web.Application()
        routes(store, notary.sign_now)(app)
        async with TestClient(TestServer(app)) as client:

            async def call(path: str, accept: str = "application/json") -> tuple[int, Any, str]:
                response = await client.get(path, headers={"Accept": accept})
                body = await response.text()
                is_json = response.content_type == "application/json"
                return response.status, json.loads(body) if is_json else body, response.content_type

            await scenario(call, notary)

    try:
        asyncio.run(main())
    finally:
        store.close()


def _unb64(items: list[str]) -> list[bytes]:
    return [base64.b64decode(x) for x in items]


def test_a_fresh_receipt_is_signed_on_demand_and_verifies_offline_and_in_go(
    live: Deployment,
    tmp_path: Path,
    goverify: GoVerify,  # noqa: F811
) -> None:
    code = live.codes[-1]  # among the last archived: no checkpoint covers it yet
    got: dict[str, Any] = {}

    async def scenario(call: Call, notary: NotaryStage) -> None:
        status, checkpoints, _ = await call("/api/v1/audit/checkpoint")
        assert status == 200 and checkpoints["checkpoints"] == []
        status, receipt, _ = await call(f"/api/v1/submissions/{code}/receipt")
        assert status == 200, receipt
        assert notary.signed == 2  # one checkpoint per partition, signed for this receipt
        got["receipt"] = receipt
        persian = code.translate(str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹"))
        status, page, kind = await call(f"/api/v1/submissions/{persian}/receipt", "text/html")
        assert status == 200 and kind == "text/html"
        assert persian in page and code in page and receipt["checkpoint"].split("\n")[0] in page
        status, again, _ = await call(f"/api/v1/submissions/{code}/receipt")
        assert again == receipt and notary.signed == 2  # covered now: nothing more to sign
        status, _missing, _ = await call("/api/v1/submissions/57240000/receipt")
        assert status in (400, 404)
        status, key, _ = await call("/api/v1/audit/key?format=text")
        got["key"] = key.strip()

    _serve(live, scenario)
    receipt, key = got["receipt"], got["key"]
    assert key == live.verifier_key
    assert receipt["tracking_code"] == code and receipt["leaf_index"] < receipt["tree_size"]
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt))
    rc, out, err = run_cli("audit", "receipt", "verify", str(path), "--key", key)
    assert rc == 0, out + err
    assert f"tracking code {code} recorded" in out
    rc, out = goverify("receipt", key, receipt)
    assert rc == 0, out

    # Any change is caught, by both.
    record = base64.b64decode(receipt["record"])
    for forged in (
        {**receipt, "record": base64.b64encode(record.replace(b"student", b"studant")).decode()},
        {**receipt, "leaf_index": receipt["leaf_index"] ^ 1},
        {**receipt, "tree_size": receipt["tree_size"] + 1},
    ):
        path.write_text(json.dumps(forged))
        rc, out, _ = run_cli("audit", "receipt", "verify", str(path), "--key", key)
        assert rc == 1 and "receipt INVALID" in out
        assert goverify("receipt", key, forged)[0] == 1
    # A receipt for another submission's record does not pass for this code.
    path.write_text(json.dumps({**receipt, "tracking_code": live.codes[0]}))
    rc, out, _ = run_cli("audit", "receipt", "verify", str(path), "--key", key)
    assert rc == 1 and "not the creation" in out
    key_file = tmp_path / "key.txt"
    key_file.write_text(key + "\n")
    path.write_text(json.dumps(receipt))
    assert run_cli("audit", "receipt", "verify", str(path), "--key", str(key_file))[0] == 0


def test_checkpoints_and_proofs_served_verify_in_python_and_go(
    live: Deployment,
    goverify: GoVerify,  # noqa: F811
) -> None:
    key = live.verifier_key
    seen: dict[str, Any] = {}

    async def scenario(call: Call, notary: NotaryStage) -> None:
        await notary.sign_now()
        first = (await call("/api/v1/audit/checkpoint"))[1]["checkpoints"]
        live.feed(1.0)  # more records: the heads grow
        await notary.sign_now()
        status, latest, _ = await call("/api/v1/audit/checkpoint")
        latest = latest["checkpoints"]
        assert [c["partition"] for c in latest] == [0, 1]
        status, note, kind = await call("/api/v1/audit/checkpoint?partition=1&format=text")
        assert status == 200 and kind == "text/plain" and note == latest[1]["checkpoint"]
        status, page, _ = await call("/api/v1/audit/checkpoints?since=0&limit=3")
        assert [c["seq"] for c in page["items"]] == [1, 2, 3] and page["next"] == 3
        status, rest, _ = await call(f"/api/v1/audit/checkpoints?since={page['next']}")
        assert len(rest["items"]) == 1 and rest["next"] is None
        since = first[0]["signed_at"]
        status, later, _ = await call(f"/api/v1/audit/checkpoints?since={since}")
        assert {c["tree_size"] for c in later["items"]} == {c["tree_size"] for c in latest}
        for old, new in zip(first, latest, strict=True):
            p, m, n = old["partition"], old["tree_size"], new["tree_size"]
            status, body, _ = await call(
                f"/api/v1/audit/proof/consistency?partition={p}&from={m}&to={n}"
            )
            assert status == 200, body
            seen.setdefault("consistency", []).append((old, new, body))
            for index in (0, m - 1, n - 1):
                status, inc, _ = await call(
                    f"/api/v1/audit/proof/inclusion?partition={p}&index={index}&size={n}"
                )
                assert status == 200 and inc["checkpoint"] == new["checkpoint"]
                seen.setdefault("inclusion", []).append((new, inc, live.records[p][index]))
        for bad in (
            "/api/v1/audit/proof/inclusion?partition=0&index=9999&size=5",
            "/api/v1/audit/proof/inclusion?partition=0&index=x",
            "/api/v1/audit/proof/consistency?partition=0&from=5&to=99999",
            "/api/v1/audit/checkpoints?since=yesterday",
        ):
            assert (await call(bad))[0] == 400, bad
        status, keys, _ = await call("/api/v1/audit/key")
        assert keys["verifier_key"] == key and keys["deployment"] == DEPLOYMENT

    _serve(live, scenario)
    verifier = Verifier.parse(key)
    for new, inc, record in seen["inclusion"]:
        head = TreeHead.parse(open_note(new["checkpoint"], [verifier]).text)
        leaf = base64.b64decode(inc["leaf_hash"])
        assert leaf == leaf_hash(record)
        assert verify_inclusion(
            inc["leaf_index"], head.size, leaf, _unb64(inc["inclusion_proof"]), head.root
        )
    for old, new, body in seen["consistency"]:
        a = TreeHead.parse(open_note(old["checkpoint"], [verifier]).text)
        b = TreeHead.parse(open_note(new["checkpoint"], [verifier]).text)
        assert (base64.b64decode(body["from_root"]), base64.b64decode(body["to_root"])) == (
            a.root,
            b.root,
        )
        proof = body["consistency_proof"]
        assert verify_consistency(a.size, b.size, a.root, b.root, _unb64(proof))
        payload = {"old": old["checkpoint"], "new": new["checkpoint"], "proof": proof}
        rc, out = goverify("consistency", key, payload)
        assert rc == 0, out


def test_the_receipt_page_shows_the_submission_s_text_as_text() -> None:
    event = {
        "type": "sada.submission.created",
        "time": "2026-11-21T05:00:00Z",
        "data": {"title": "<script>alert(1)</script>", "kind": "complaint", "unit_id": "univ"},
    }
    record = json.dumps({"v": 1, "kind": "event", "event": event}).encode()
    receipt = build_receipt(
        tracking_code="78168382112",
        submission_id="s-1",
        partition=0,
        offset=0,
        leaf_index=0,
        record=record,
        tree_size=1,
        proof=[],
        checkpoint="o/archive/0\n1\nAAAA\n\n— k AAAA\n",
        key="k+00000000",
    )
    page = render(receipt, "k+00000000+AAAA")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "۷۸۱۶۸۳۸۲۱۱۲" in page and "78168382112" in page
    assert "شکایت" in page and "۱۴۰۵/" in page  # the kind, and the date in the Jalali calendar

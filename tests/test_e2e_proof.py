"""Proof in a running Sada: a receipt right after submitting, checkpoints on the topic, a restart.

``sada run`` on the embedded broker, judged by what an author and an auditor
see: the receipt of a fresh submission (signed on demand) verifies offline
with the key the API publishes; the checkpoints reach ``sada.checkpoints``;
after a restart on the same data directory the same key signs, the tree
continues, and a head from before the restart is consistent with the new one.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from e2e_support import (
    FAST_TIMERS,
    EventFactory,
    RawProducer,
    clean_env,
    free_port,
    get_json,
    http_get,
    read_topic,
    start_run,
    wait_for,
    wait_healthy,
)
from proof_support import run_cli

from sada.infra import topics
from sada.pipeline.domain.merkle import verify_consistency
from sada.pipeline.domain.note import Verifier, open_note
from sada.pipeline.domain.tlog_checkpoint import TreeHead

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def _submit(bootstrap: str, event: dict[str, Any]) -> None:
    producer = RawProducer(bootstrap)
    producer.send(topics.SUBMISSIONS, orjson.dumps(event), event["data"]["submission_id"].encode())
    producer.flush()
    producer.close()


def _receipt(port: int, code: str) -> dict[str, Any] | None:
    answer = get_json(port, f"/api/v1/submissions/{code}/receipt")
    return answer[1] if answer is not None and answer[0] == 200 else None


def _head(note: str, key: Verifier) -> TreeHead:
    return TreeHead.parse(open_note(note, [key]).text)


@pytest.mark.timeout(300)
def test_receipts_checkpoints_and_a_restart_in_a_running_sada(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    env = clean_env(**FAST_TIMERS, SADA_DEPLOYMENT="sada.e2e")
    factory = EventFactory(seed=5)
    first_sub, second_sub = factory.submission(), factory.submission()

    first = start_run(tmp_path / "first", data, port, env=env)
    try:
        bootstrap = wait_healthy(first, port)["broker"]["bootstrap"]
        assert "notary" in (get_json(port, "/healthz") or (0, {}))[1]["workers"]
        _submit(bootstrap, first_sub)
        code = first_sub["data"]["tracking_code"]
        receipt = wait_for(lambda: _receipt(port, code), 60, "the receipt", watch=first)
        answer = http_get(port, "/api/v1/audit/key?format=text")
        assert answer is not None and answer[0] == 200
        key_text = answer[1].decode().strip()
        key = Verifier.parse(key_text)
        path = tmp_path / "receipt.json"
        path.write_text(json.dumps(receipt))
        rc, out, err = run_cli("audit", "receipt", "verify", str(path), "--key", key_text)
        assert rc == 0, out + err
        before = _head(receipt["checkpoint"], key)
        assert before.origin.startswith("sada.e2e/archive/")
        page = http_get(port, f"/api/v1/submissions/{code}/receipt?format=html")
        assert page is not None and page[0] == 200 and code.encode() in page[1]
        published = wait_for(
            lambda: [r for r in read_topic(bootstrap, topics.CHECKPOINTS) if r.value],
            30,
            "a checkpoint on sada.checkpoints",
            watch=first,
        )
        assert receipt["checkpoint"].encode() in [r.value for r in published]
        assert first.interrupt() == 0, first.output()
    finally:
        first.close()
    key_file = data / "signing.key"
    assert key_file.exists() and key_file.stat().st_mode & 0o077 == 0

    second = start_run(tmp_path / "second", data, port, name="sada-run-2", env=env)
    try:
        bootstrap = wait_healthy(second, port)["broker"]["bootstrap"]
        _submit(bootstrap, second_sub)
        code2 = second_sub["data"]["tracking_code"]
        receipt2 = wait_for(lambda: _receipt(port, code2), 60, "the second receipt", watch=second)
        assert receipt2["key"] == receipt["key"]  # the data directory's key, read again
        after = _head(receipt2["checkpoint"], key)
        p = before.partition()
        if after.partition() == p:
            assert after.size > before.size
        latest = (get_json(port, f"/api/v1/audit/checkpoint?partition={p}") or (0, {}))[1]
        now = _head(latest["checkpoints"][0]["checkpoint"], key)
        answer = get_json(
            port,
            f"/api/v1/audit/proof/consistency?partition={p}&from={before.size}&to={now.size}",
        )
        assert answer is not None and answer[0] == 200, answer
        proof = [base64.b64decode(h) for h in answer[1]["consistency_proof"]]
        assert verify_consistency(before.size, now.size, before.root, now.root, proof)
        assert second.interrupt() == 0, second.output()
    finally:
        second.close()

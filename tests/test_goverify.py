"""Sada's checkpoints and proofs verify with code Sada did not write: Go's sumdb note and tlog.

``tests/goverify`` is a small Go program over ``golang.org/x/mod/sumdb/note``
and ``golang.org/x/mod/sumdb/tlog``; it is built here into a temporary
directory (the module cache under ~/go, ``-mod=mod`` so a fresh cache fills
from go.sum). What it checks is made by Sada's own code: the domain's
Merkle tree and signer here, the store and the HTTP API in
``test_proof_http``, which reuses :func:`goverify`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sada.pipeline.domain.merkle import (
    Frontier,
    consistency_plan,
    inclusion_plan,
    leaf_hash,
    prove,
)
from sada.pipeline.domain.note import Signer
from sada.pipeline.domain.tlog_checkpoint import TreeHead, origin

SOURCE = Path(__file__).resolve().parent / "goverify"
GoVerify = Callable[[str, str, Any], tuple[int, str]]


@pytest.fixture(scope="session")
def goverify(tmp_path_factory: pytest.TempPathFactory) -> GoVerify:
    """``goverify(command, key, payload)`` -> (exit code, output); payload: text or JSON."""
    go = shutil.which("go")
    if go is None:
        pytest.fail(
            "the Go toolchain is not installed: the receipts need a verifier Sada did not write"
        )
    out = tmp_path_factory.mktemp("goverify")
    binary = out / "goverify"
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    built = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=SOURCE,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    counter = iter(range(1_000_000))

    def run(command: str, key: str, payload: Any) -> tuple[int, str]:
        path = out / f"input-{next(counter)}"
        path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
        done = subprocess.run(
            [str(binary), command, key, str(path)], capture_output=True, text=True, timeout=60
        )
        return done.returncode, done.stdout + done.stderr

    return run


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


class _Log:
    """One partition's tree and its nodes, as the store keeps them."""

    def __init__(self, records: list[bytes]) -> None:
        self.records = records
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.heads: dict[int, bytes] = {}
        frontier = Frontier()
        for r in records:
            for level, index, h in frontier.append(leaf_hash(r)):
                self.nodes[(level, index)] = h
            self.heads[frontier.size] = frontier.root()

    def fetch(self, wanted: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        return {n: self.nodes[n] for n in wanted}


def test_go_opens_a_signed_checkpoint(goverify: GoVerify) -> None:
    signer = Signer.generate("sada.example.org/key-1")
    log = _Log([f"record {i}".encode() for i in range(13)])
    note = signer.sign(TreeHead(origin("sada.example.org", 2), 13, log.heads[13]).text())
    code, out = goverify("note", signer.verifier.text(), note)
    assert code == 0, out
    # tlog prints the root in base64, as the checkpoint does.
    assert out.split("\n")[:3] == ["sada.example.org/archive/2", "13", _b64(log.heads[13])]
    other = Signer.generate("sada.example.org/key-1")
    code, out = goverify("note", other.verifier.text(), note)
    assert code == 1 and "FAILED" in out
    code, out = goverify("note", signer.verifier.text(), note.replace("\n13\n", "\n14\n"))
    assert code == 1 and "FAILED" in out


def test_go_checks_receipts_for_every_leaf_and_refuses_altered_ones(goverify: GoVerify) -> None:
    signer = Signer.generate("sada.example.org/key-1")
    key = signer.verifier.text()
    records = [json.dumps({"n": i, "text": "شکایت"}).encode() for i in range(21)]
    log = _Log(records)
    size = 21
    note = signer.sign(TreeHead(origin("sada.example.org", 0), size, log.heads[size]).text())
    # Every leaf in one run would be slow to spawn; a spread of positions is enough.
    for index in (0, 1, 7, 8, 15, 16, 19, 20):
        receipt = {
            "partition": 0,
            "leaf_index": index,
            "record": _b64(records[index]),
            "tree_size": size,
            "inclusion_proof": [_b64(h) for h in prove(inclusion_plan(index, size), log.fetch)],
            "checkpoint": note,
        }
        code, out = goverify("receipt", key, receipt)
        assert code == 0, (index, out)
    altered = {**receipt, "record": _b64(records[20] + b" ")}
    assert goverify("receipt", key, altered)[0] == 1
    assert goverify("receipt", key, {**receipt, "leaf_index": 19})[0] == 1
    assert goverify("receipt", key, {**receipt, "partition": 1})[0] == 1
    proof = list(receipt["inclusion_proof"])
    proof[0] = _b64(leaf_hash(b"forged"))
    assert goverify("receipt", key, {**receipt, "inclusion_proof": proof})[0] == 1


def test_go_checks_consistency_between_two_signed_checkpoints(goverify: GoVerify) -> None:
    signer = Signer.generate("sada.example.org/key-1")
    key = signer.verifier.text()
    records = [f"r{i}".encode() for i in range(40)]
    log = _Log(records)

    def note(size: int, root: bytes) -> str:
        return signer.sign(TreeHead(origin("sada.example.org", 1), size, root).text())

    for old, new in ((1, 40), (8, 40), (13, 40), (39, 40), (40, 40), (16, 32)):
        proof = [_b64(h) for h in prove(consistency_plan(old, new), log.fetch)]
        payload = {
            "old": note(old, log.heads[old]),
            "new": note(new, log.heads[new]),
            "proof": proof,
        }
        code, out = goverify("consistency", key, payload)
        assert code == 0, (old, new, out)
    # A tree whose 6th record was rewritten is not an extension of the old head.
    rewritten = _Log([*records[:5], b"rewritten", *records[6:]])
    proof = [_b64(h) for h in prove(consistency_plan(13, 40), rewritten.fetch)]
    payload = {
        "old": note(13, log.heads[13]),
        "new": note(40, rewritten.heads[40]),
        "proof": proof,
    }
    code, out = goverify("consistency", key, payload)
    assert code == 1 and "consistency proof" in out

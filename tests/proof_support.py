"""What the proof tests share: a deployment on a SQLite file, a scenario, the CLI, a tamperer.

A deployment here is a store folded exactly as the live projector folds it,
a signing key in a file of its own (``SADA_SIGNING_KEY_FILE``) and a
deployment name, set in the environment the CLI reads.
"""

from __future__ import annotations

import io
import random
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sada.app.cli import run as cli
from sada.consumers.archive import chain_hash
from sada.consumers.store import SqlStore
from sada.infra.signing import write_signer
from sada.infra.topics import partition_for
from sada.pipeline.domain.config import load_config
from sada.pipeline.domain.logcodec import encode_event
from sada.pipeline.domain.merkle import Frontier, leaf_hash, stored_index
from sada.pipeline.domain.note import Signer
from sada.pipeline.domain.projector import Projector
from sada.pipeline.domain.rules import Rules
from sada.producers.events import build_event

PARTITIONS = 2
DEPLOYMENT = "sada.test"
T0 = datetime(2026, 11, 21, 5, 0, tzinfo=UTC)


def scenario(submissions: int, votes: int, seed: int = 3) -> tuple[list[list[bytes]], list[str]]:
    """Log records per partition (submissions, then votes on them), and the tracking codes."""
    rng = random.Random(seed)
    timed: list[tuple[datetime, dict[str, Any]]] = []
    subs = []
    for i in range(submissions):
        t = T0 + timedelta(minutes=i)
        e = build_event(
            "sada.submission.created",
            {
                "kind": "complaint",
                "title": f"اعتراض شمارهٔ {i}",
                "body": "غذای سلف دانشجویی کیفیت مناسبی ندارد.",
                "language": "fa",
                "channel": "telegram",
                "unit_id": "univ.dormitories.girls",
                "author": {"id": f"student-{i}", "role": "student"},
                "anonymous": False,
            },
            source="/integrations/telegram",
            time=t,
            rng=rng,
        )
        subs.append(e)
        timed.append((t, e))
    for v in range(votes):
        target = subs[v % len(subs)]
        t = T0 + timedelta(minutes=submissions + v)
        e = build_event(
            "sada.vote.cast",
            {
                "submission_id": target["data"]["submission_id"],
                "voter_id": f"voter-{v}",
                "stance": "support",
            },
            source="/integrations/telegram",
            time=t,
            rng=rng,
        )
        timed.append((t, e))
    timed.sort(key=lambda te: te[0])
    per_partition: list[list[bytes]] = [[] for _ in range(PARTITIONS)]
    for t, e in timed:
        p = partition_for(e["data"]["submission_id"], PARTITIONS)
        per_partition[p].append(encode_event(e, t, False, "sada.votes"))
    return per_partition, [s["data"]["tracking_code"] for s in subs]


@dataclass
class Deployment:
    url: str
    path: Path
    key_file: Path
    signer: Signer
    records: list[list[bytes]]
    codes: list[str]
    fed: list[int] = field(default_factory=lambda: [0] * PARTITIONS)

    @property
    def verifier_key(self) -> str:
        return self.signer.verifier.text()

    def open(self) -> SqlStore:
        return SqlStore(self.url)

    def feed(self, upto: float, store: SqlStore | None = None) -> None:
        """Apply each partition's records up to the fraction ``upto``, as the projector does."""
        own = store is None
        s = store or self.open()
        rules = Rules.from_config(load_config())
        try:
            for p, recs in enumerate(self.records):
                end = int(len(recs) * upto)
                if end <= self.fed[p]:
                    continue
                projector = Projector(rules, s, p)  # built from the store: a restart
                batch = list(enumerate(recs))[self.fed[p] : end]
                projector.apply_batch(batch)
                self.fed[p] = end
        finally:
            if own:
                s.close()


def make_deployment(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    submissions: int = 12,
    votes: int = 40,
) -> Deployment:
    path = tmp_path / "live.db"
    url = f"sqlite:///{path}"
    store = SqlStore(url)
    store.migrate()
    store.close()
    signer = Signer.generate(f"{DEPLOYMENT}/key-1")
    key_file = tmp_path / "signing.key"
    write_signer(key_file, signer)
    monkeypatch.setenv("SADA_SIGNING_KEY_FILE", str(key_file))
    monkeypatch.setenv("SADA_DEPLOYMENT", DEPLOYMENT)
    monkeypatch.setenv("SADA_DATA_DIR", str(tmp_path / "data"))
    records, codes = scenario(submissions, votes)
    return Deployment(url, path, key_file, signer, records, codes)


def run_cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli(list(args), out, err)
    return code, out.getvalue(), err.getvalue()


def rewrite_record(path: Path, partition: int, leaf: int, record: bytes) -> None:
    """Change one archived record and recompute everything derived from it, as a tamperer would.

    The hash chain after it, the partition's head hash, every Merkle tree node
    and the tree root are recomputed; the database's own signed checkpoints,
    which the tamperer cannot re-sign, are deleted.
    """
    with sqlite3.connect(path) as db:
        rows = db.execute(
            'SELECT "offset", record, prev_hash FROM archive WHERE partition = ? ORDER BY "offset"',
            (partition,),
        ).fetchall()
        records: Sequence[bytes] = [bytes(r[1]) for r in rows]
        records = [*records[:leaf], record, *records[leaf + 1 :]]
        prev = rows[leaf][2]
        for i in range(leaf, len(rows)):
            h = chain_hash(prev, partition, rows[i][0], records[i])
            db.execute(
                "UPDATE archive SET record = ?, prev_hash = ?, hash = ?"
                ' WHERE partition = ? AND "offset" = ?',
                (records[i], prev, h, partition, rows[i][0]),
            )
            prev = h
        frontier = Frontier()
        nodes = []
        for r in records:
            nodes.extend(frontier.append(leaf_hash(r)))
        db.execute("DELETE FROM merkle_nodes WHERE partition = ?", (partition,))
        db.executemany(
            "INSERT INTO merkle_nodes (partition, seq, hash) VALUES (?, ?, ?)",
            [(partition, stored_index(lv, ix), h) for lv, ix, h in nodes],
        )
        db.execute(
            "UPDATE checkpoints SET head_hash = ?, tree_root = ? WHERE partition = ?",
            (prev, frontier.root().hex(), partition),
        )
        db.execute("DELETE FROM signed_checkpoints")

"""Proof anyone can check, through the CLI as operators and auditors use it.

- A rewrite that recomputes the whole hash chain (and the stored trees) passes
  the chain check, but not saved checkpoints: ``sada audit verify
  --checkpoints FILE`` names the partition and the first checkpoint it breaks.
- A restart and a replay give the same roots.
- Keys: one per deployment, a worker with another is refused in one line,
  rotation keeps old checkpoints verifiable, no secret is ever stored or shown.
- An archive written before the trees existed gets them from its migration.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest
from proof_support import (
    DEPLOYMENT,
    Deployment,
    make_deployment,
    rewrite_record,
    run_cli,
)
from sqlalchemy import create_engine, text
from sqlalchemy.dialects import sqlite

from sada.consumers import migrations
from sada.consumers.archive import chain_hash
from sada.consumers.store import SqlStore
from sada.consumers.store.trees import nodes_query
from sada.consumers.tree_audit import audit_store
from sada.infra.settings import Settings
from sada.infra.signing import load_signer, write_signer
from sada.pipeline.domain.errors import SigningKeyError
from sada.pipeline.domain.merkle import (
    Frontier,
    inclusion_plan,
    leaf_hash,
    plan_nodes,
    verify_inclusion,
)
from sada.pipeline.domain.note import Signer
from sada.pipeline.domain.ports import GENESIS_HASH


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Deployment:
    return make_deployment(tmp_path, monkeypatch)


def _sign_and_save(d: Deployment, saved: Path) -> None:
    code, out, err = run_cli(
        "audit", "checkpoints", "--database", d.url, "--sign", "--save", str(saved)
    )
    assert code == 0, out + err


def test_a_recomputed_chain_passes_alone_but_not_against_saved_checkpoints(
    live: Deployment, tmp_path: Path
) -> None:
    saved = tmp_path / "heads.jsonl"
    live.feed(0.5)
    _sign_and_save(live, saved)
    live.feed(1.0)
    _sign_and_save(live, saved)
    lines = [json.loads(line) for line in saved.read_text().splitlines()]
    assert [c["partition"] for c in lines] == [0, 1, 0, 1]
    code, out, _ = run_cli("audit", "verify", "--database", live.url, "--checkpoints", str(saved))
    assert code == 0, out
    assert "agree with 8 signed checkpoints" in out  # 4 saved, 4 in the store

    # Rewrite partition 1's fourth record (covered by every checkpoint) and recompute
    # the chain, the trees and the heads; drop the store's signed checkpoints.
    with sqlite3.connect(live.path) as db:
        record = bytes(
            db.execute("SELECT record FROM archive WHERE partition = 1 AND leaf = 3").fetchone()[0]
        )
    forged = record.replace(b'"late":false', b'"late":true')
    assert forged != record
    rewrite_record(live.path, 1, 3, forged)

    code, out, _ = run_cli("audit", "verify", "--database", live.url)
    assert code == 0, out  # the chain and the stored tree are consistent again
    code, out, _ = run_cli("audit", "verify", "--database", live.url, "--checkpoints", str(saved))
    assert code == 1
    assert "partition 1" in out
    assert f"checkpoint at {saved.name} line 2 " in out  # the first one of partition 1
    assert "NOT consistent" in out
    # Partition 0 alone is untouched: its saved checkpoints still hold.
    only_zero = tmp_path / "zero.jsonl"
    only_zero.write_text("".join(json.dumps(c) + "\n" for c in lines if c["partition"] == 0))
    code, out, _ = run_cli(
        "audit", "verify", "--database", live.url, "--checkpoints", str(only_zero)
    )
    assert code == 0, out


def test_the_store_own_checkpoints_catch_a_rewrite_that_leaves_them(live: Deployment) -> None:
    live.feed(1.0)
    assert run_cli("audit", "checkpoints", "--database", live.url, "--sign")[0] == 0
    with sqlite3.connect(live.path) as db:
        before = db.execute("SELECT count(*) FROM signed_checkpoints").fetchone()[0]
        record = bytes(
            db.execute("SELECT record FROM archive WHERE partition = 0 AND leaf = 0").fetchone()[0]
        )
    # As rewrite_record, but the signed checkpoints survive (a copy is put back).
    with sqlite3.connect(live.path) as db:
        kept = db.execute("SELECT * FROM signed_checkpoints").fetchall()
    rewrite_record(live.path, 0, 0, record + b" ")
    with sqlite3.connect(live.path) as db:
        db.executemany(
            f"INSERT INTO signed_checkpoints VALUES ({', '.join('?' * len(kept[0]))})", kept
        )
    assert before == len(kept)
    code, out, _ = run_cli("audit", "verify", "--database", live.url)
    assert code == 1
    assert "partition 0" in out and "the store's checkpoint #" in out


def test_a_saved_checkpoint_beyond_the_archive_is_a_truncation(
    live: Deployment, tmp_path: Path
) -> None:
    live.feed(1.0)
    saved = tmp_path / "heads.jsonl"
    _sign_and_save(live, saved)
    with sqlite3.connect(live.path) as db:
        last = db.execute('SELECT max("offset") FROM archive WHERE partition = 0').fetchone()[0]
        db.execute('DELETE FROM archive WHERE partition = 0 AND "offset" = ?', (last,))
    code, out, _ = run_cli("audit", "verify", "--database", live.url, "--checkpoints", str(saved))
    assert code == 1 and "partition 0" in out


def test_checkpoints_of_another_key_do_not_verify(live: Deployment, tmp_path: Path) -> None:
    live.feed(1.0)
    saved = tmp_path / "heads.jsonl"
    _sign_and_save(live, saved)
    other = Signer.generate(f"{DEPLOYMENT}/key-1")
    code, out, _ = run_cli(
        "audit",
        "verify",
        "--database",
        live.url,
        "--checkpoints",
        str(saved),
        "--key",
        other.verifier.text(),
    )
    assert code == 1 and "no known key signed" in out
    code, out, _ = run_cli(
        "audit",
        "verify",
        "--database",
        live.url,
        "--checkpoints",
        str(saved),
        "--key",
        live.verifier_key,
    )
    assert code == 0, out


def _heads(url: str) -> list[tuple[int, int, bytes]]:
    store = SqlStore(url)
    try:
        return [(h.partition, h.size, h.root) for h in store.tree_heads()]
    finally:
        store.close()


def test_a_restart_and_a_replay_give_the_same_roots(live: Deployment, tmp_path: Path) -> None:
    # Live, in three runs of the projector, each from a freshly opened store.
    for upto in (0.3, 0.7, 1.0):
        live.feed(upto)
    heads = _heads(live.url)
    # The same records in one run into another database.
    once = tmp_path / "once.db"
    store = SqlStore(f"sqlite:///{once}")
    store.migrate()
    store.close()
    other = Deployment(
        f"sqlite:///{once}", once, live.key_file, live.signer, live.records, live.codes
    )
    other.feed(1.0)
    assert _heads(other.url) == heads
    # The roots are those of the records themselves.
    for p, size, root in heads:
        f = Frontier()
        f.extend(live.records[p])
        assert (size, root) == (len(live.records[p]), f.root())
    # Replay rebuilds the trees node for node (replay --verify compares merkle_nodes too).
    code, out, err = run_cli("replay", "--database", live.url, "--verify")
    assert code == 0, out + err
    rebuilt = tmp_path / "rebuilt.db"
    code, out, err = run_cli("replay", "--database", live.url, "--into", f"sqlite:///{rebuilt}")
    assert code == 0, out + err
    assert _heads(f"sqlite:///{rebuilt}") == heads


def test_replay_verify_names_a_tree_node_changed_by_hand(live: Deployment) -> None:
    live.feed(1.0)
    with sqlite3.connect(live.path) as db:
        db.execute(
            "UPDATE merkle_nodes SET hash = ? WHERE partition = 0 AND seq = 2",  # node (1, 0)
            (b"\x00" * 32,),
        )
    code, out, _ = run_cli("replay", "--database", live.url, "--verify")
    assert code == 1 and "merkle_nodes (0, 2)" in out


# -- keys ------------------------------------------------------------------------------------


def test_a_worker_with_another_key_or_deployment_is_refused_in_one_line(live: Deployment) -> None:
    store = live.open()
    try:
        store.register_signing_key(live.signer.verifier, DEPLOYMENT)
        store.register_signing_key(live.signer.verifier, DEPLOYMENT)  # a second worker: fine
        with pytest.raises(SigningKeyError, match="is not the deployment's") as refused:
            store.register_signing_key(Signer.generate("intruder").verifier, DEPLOYMENT)
        assert "\n" not in str(refused.value)
        with pytest.raises(SigningKeyError, match="deployment"):
            store.register_signing_key(live.signer.verifier, "elsewhere.example")
    finally:
        store.close()


def test_sada_run_refuses_a_key_that_is_not_the_deployment_s(
    live: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, free_port: int
) -> None:
    assert run_cli("audit", "checkpoints", "--database", live.url, "--sign")[0] == 0
    intruder = tmp_path / "intruder.key"
    write_signer(intruder, Signer.generate(f"{DEPLOYMENT}/intruder"))
    monkeypatch.setenv("SADA_SIGNING_KEY_FILE", str(intruder))
    code, _out, err = run_cli("run", "--database", live.url, "--port", str(free_port))
    assert code == 1
    assert err.count("\n") == 1 and "is not the deployment's" in err


def test_rotation_keeps_old_checkpoints_verifiable(
    live: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = tmp_path / "heads.jsonl"
    live.feed(0.5)
    _sign_and_save(live, saved)
    new_key = tmp_path / "new.key"
    code, out, _ = run_cli(
        "audit", "key", "--generate", str(new_key), "--name", f"{DEPLOYMENT}/key-2"
    )
    assert code == 0 and out.startswith(f"{DEPLOYMENT}/key-2+")
    assert stat.S_IMODE(os.stat(new_key).st_mode) == 0o600
    code, out, _ = run_cli("audit", "key", "--database", live.url, "--rotate", str(new_key))
    assert code == 0 and "was sada.test/key-1+" in out
    # The old key now refuses to start; the new one signs.
    store = live.open()
    with pytest.raises(SigningKeyError, match="retired"):
        store.register_signing_key(live.signer.verifier, DEPLOYMENT)
    store.close()
    monkeypatch.setenv("SADA_SIGNING_KEY_FILE", str(new_key))
    live.feed(1.0)
    _sign_and_save(live, saved)
    code, out, _ = run_cli("audit", "key", "--database", live.url, "--all")
    assert code == 0
    assert out.splitlines()[0].startswith(f"{DEPLOYMENT}/key-2+")
    assert "retired" in out.splitlines()[1]
    # Old and new checkpoints, saved and stored, verify with the keys the store lists,
    # and with both keys named; the store's own old ones are left out when only the
    # new key is trusted, the auditor's are not.
    code, out, _ = run_cli("audit", "verify", "--database", live.url, "--checkpoints", str(saved))
    assert code == 0, out
    new_key_text = out_key = run_cli("audit", "key", "--database", live.url)[1].strip()
    assert out_key.startswith(f"{DEPLOYMENT}/key-2+")
    both = ["--key", live.verifier_key, "--key", new_key_text]
    verify = ["audit", "verify", "--database", live.url]
    code, out, _ = run_cli(*verify, "--checkpoints", str(saved), *both)
    assert code == 0, out
    code, out, _ = run_cli(*verify, "--key", new_key_text)
    assert code == 0 and "agree with 2 signed checkpoints" in out, out
    code, out, _ = run_cli(*verify, "--checkpoints", str(saved), "--key", new_key_text)
    assert code == 1 and f"{saved.name} line 1" in out and "no known key" in out
    # Reusing a name is refused: a new key needs a new name.
    again = tmp_path / "again.key"
    write_signer(again, Signer.generate(f"{DEPLOYMENT}/key-1"))
    code, _, err = run_cli("audit", "key", "--database", live.url, "--rotate", str(again))
    assert code == 1 and "new name" in err


def test_the_embedded_key_is_made_once_with_mode_0600_and_never_stored_or_shown(
    live: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SADA_SIGNING_KEY_FILE")
    data = tmp_path / "fresh-data"
    settings = Settings(data_dir=data, deployment=DEPLOYMENT)
    signer = load_signer(settings)
    key_file = data / "signing.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert load_signer(settings).verifier == signer.verifier  # read again, not remade
    fresh = tmp_path / "fresh.db"
    monkeypatch.setenv("SADA_DATA_DIR", str(data))
    url = f"sqlite:///{fresh}"
    store = SqlStore(url)
    store.migrate()
    store.close()
    live2 = Deployment(url, fresh, key_file, signer, live.records, live.codes)
    live2.feed(1.0)
    outputs = [
        run_cli("audit", "checkpoints", "--database", url, "--sign"),
        run_cli("audit", "key", "--database", url, "--all"),
        run_cli("audit", "verify", "--database", url),
    ]
    assert all(code == 0 for code, _, _ in outputs)
    secret = signer.secret_text().rsplit("+", 1)[1]
    assert all(secret not in out + err for _, out, err in outputs)
    assert secret.encode() not in fresh.read_bytes()
    with sqlite3.connect(fresh) as db:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            for row in db.execute(f'SELECT * FROM "{table}"'):
                assert all(secret not in str(v) for v in row)
    with pytest.raises(SigningKeyError, match="cannot read"):
        load_signer(Settings(signing_key_file=tmp_path / "missing.key"))


# -- the migration -----------------------------------------------------------------------------


def test_an_archive_from_before_the_trees_gets_them_from_its_migration(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{path}")
    records = {0: [f"r{i}".encode() for i in range(37)], 3: [b"only"]}
    with engine.begin() as conn:
        migrations.upgrade(conn, "0001")
        for p, recs in records.items():
            head = GENESIS_HASH
            for offset, r in enumerate(recs):
                h = chain_hash(head, p, offset * 2, r)  # offsets skip; leaves do not
                conn.execute(
                    text(
                        'INSERT INTO archive (partition, "offset", record, prev_hash, hash)'
                        " VALUES (:p, :o, :r, :prev, :h)"
                    ),
                    {"p": p, "o": offset * 2, "r": r, "prev": head, "h": h},
                )
                head = h
            conn.execute(
                text(
                    "INSERT INTO checkpoints (partition, next_offset, clock, head_hash)"
                    " VALUES (:p, :n, NULL, :h)"
                ),
                {"p": p, "n": 2 * len(recs), "h": head},
            )
    engine.dispose()
    store = SqlStore(f"sqlite:///{path}")
    store.migrate()
    try:
        for head in store.tree_heads():
            f = Frontier()
            f.extend(records[head.partition])
            assert (head.size, head.root) == (f.size, f.root())
        proof, leaf = store.inclusion_proof(0, 5, 37)
        assert leaf == leaf_hash(b"r5")
        assert verify_inclusion(5, 37, leaf, proof, store.tree_heads()[0].root)
        assert [r.partition for r in store.iter_archive()].count(3) == 1
        report = audit_store(store)
        assert report.ok, report.first_bad
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        leaves = db.execute('SELECT leaf FROM archive WHERE partition = 0 ORDER BY "offset"')
        assert [leaf for (leaf,) in leaves] == list(range(37))


def test_proofs_probe_the_node_key_rather_than_scan_a_partition(live: Deployment) -> None:
    # A scan of a partition's nodes made a proof at a million leaves take ~0.7 s.
    live.feed(1.0)
    plan = inclusion_plan(5, len(live.records[0]))
    assert len(plan_nodes(plan)) > 1
    query = nodes_query(0, {n for entry in plan for n in entry})
    assert query is not None
    sql = str(query.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    with sqlite3.connect(live.path) as db:
        steps = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}")]
    searches = [s for s in steps if "merkle_nodes" in s]
    assert searches and all("partition=? AND seq=?" in s for s in searches), steps

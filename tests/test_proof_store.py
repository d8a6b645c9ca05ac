"""The store's side of the proofs on both backends: trees, signed checkpoints, keys, receipts.

Same fixtures as ``test_store`` (SQLite, and PostgreSQL at
``SADA_TEST_POSTGRES_URL``), same batch histories; what is checked is what
the HTTP API and the CLI rely on.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from test_store import (  # noqa: F401  (fixtures)
    OpenStore,
    backend,
    history,
    open_store,
    postgres_admin,
    write_all,
)

from sada.consumers.store import SqlStore
from sada.consumers.tree_audit import audit_store
from sada.pipeline.domain.errors import ProofError, SigningKeyError
from sada.pipeline.domain.merkle import Frontier, leaf_hash, verify_consistency, verify_inclusion
from sada.pipeline.domain.notary import SignedCheckpoint, due, key_label, sign_head
from sada.pipeline.domain.note import Signer
from sada.pipeline.domain.receipt import verify_receipt

DEPLOYMENT = "sada.store-test"


def _sign(store: SqlStore, signer: Signer, at: datetime) -> list[SignedCheckpoint]:
    todo = due(store.tree_heads(), store.latest_signed_sizes(key_label(signer)))
    signed = [sign_head(signer, DEPLOYMENT, h, at) for h in todo]
    store.add_signed_checkpoints(signed)
    return signed


def test_trees_checkpoints_keys_and_receipts(open_store: OpenStore, backend: str) -> None:  # noqa: F811
    store = open_store(backend)
    signer = Signer.generate(f"{DEPLOYMENT}/k1")
    store.register_signing_key(signer.verifier, DEPLOYMENT)
    histories = [history(p) for p in (0, 1)]
    for h in histories:
        write_all(store, h.batches[:2])
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    first = _sign(store, signer, t0)
    assert len(first) == 2
    assert _sign(store, signer, t0) == []  # nothing grew: nothing signed
    store.add_signed_checkpoints(first)  # stored again: kept once
    assert len(store.signed_checkpoints(None, None, None)) == 2
    for h in histories:
        write_all(store, h.batches[2:])
    second = _sign(store, signer, t0 + timedelta(minutes=1))
    assert len(second) == 2

    # Heads are the records' trees.
    for head in store.tree_heads():
        records = [r.record for r in store.iter_archive(head.partition)]
        f = Frontier()
        f.extend(records)
        assert (head.size, head.root) == (len(records), f.root())
        proof, leaf = store.inclusion_proof(head.partition, 1, head.size)
        assert leaf == leaf_hash(records[1])
        assert verify_inclusion(1, head.size, leaf, proof, head.root)
        old = next(c for c in first if c.partition == head.partition)
        cproof = store.consistency_proof(head.partition, old.size, head.size)
        assert verify_consistency(old.size, head.size, old.root, head.root, cproof)
        assert store.roots_at(head.partition, [old.size, head.size]) == [old.root, head.root]
        with pytest.raises(ProofError):
            store.inclusion_proof(head.partition, 0, head.size + 1)

    latest = store.latest_checkpoints()
    assert [(c.partition, c.size) for c in latest] == [(c.partition, c.size) for c in second]
    # Sequence numbers rise (PostgreSQL may skip some: an insert that conflicted used one).
    seqs = [c.seq for c in store.signed_checkpoints(None, None, None)]
    assert len(seqs) == 4 and seqs == sorted(seqs)
    assert [c.seq for c in store.signed_checkpoints(seqs[1], None, None)] == seqs[2:]
    assert len(store.signed_checkpoints(None, t0, None)) == 2  # strictly after t0
    assert store.checkpoint_of_size(latest[0].partition, latest[0].size) == latest[0]

    # The outbox.
    assert [c.seq for c in store.unpublished_checkpoints()] == seqs
    store.mark_checkpoints_published(seqs[:3])
    assert [c.seq for c in store.unpublished_checkpoints()] == seqs[3:]

    # A receipt verifies with the verifier key alone.
    code = histories[1].complaint.tracking_code
    receipt = store.receipt(code)
    assert receipt is not None
    check = verify_receipt(receipt, [signer.verifier])
    assert check.tracking_code == code and check.partition == 1

    # Keys: another is refused, a rotation keeps the old one listed.
    with pytest.raises(SigningKeyError):
        store.register_signing_key(Signer.generate("other").verifier, DEPLOYMENT)
    new = Signer.generate(f"{DEPLOYMENT}/k2")
    assert store.rotate_signing_key(new.verifier, DEPLOYMENT) == key_label(signer)
    keys = store.signing_keys()
    assert [k["key"] for k in keys] == [key_label(new), key_label(signer)]
    assert keys[1]["retired_at"] is not None and keys[0]["retired_at"] is None
    assert store.latest_checkpoints() == []  # the new key has signed nothing yet
    assert store.receipt(code) is None  # so nothing it signed covers the record
    assert len(_sign(store, new, t0 + timedelta(minutes=2))) == 2
    report = audit_store(store)
    assert report.ok, report.first_bad
    assert report.checked == 6  # the old key's checkpoints still verify

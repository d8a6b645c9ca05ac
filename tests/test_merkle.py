"""The Merkle tree of the archive: RFC 9162 hashing, incremental nodes, proofs and their checks.

Known answers come from the Certificate Transparency test data (the eight
leaves below, used by RFC 6962 implementations); everything else is checked
against a naive recursive implementation of RFC 9162 section 2.1, written here
straight from the RFC's definitions.
"""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sada.pipeline.domain import merkle
from sada.pipeline.domain.errors import ProofError
from sada.pipeline.domain.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_plan,
    inclusion_plan,
    leaf_hash,
    prove,
    root_at,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
ROOTS = {
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
INCLUSION = {  # (leaf index, tree size) -> audit path
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 3): ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    (1, 5): [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}
CONSISTENCY = {  # (old size, new size) -> proof
    (1, 1): [],
    (1, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}


# -- RFC 9162 2.1, naively -----------------------------------------------------------------


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()


def path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*path(m, d[:k]), mth(d[k:])]
    return [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = _k(n)
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


def consistency(m: int, d: list[bytes]) -> list[bytes]:
    return subproof(m, d, True)


# -- a stored tree: the nodes the frontier hands out ----------------------------------------


class Tree:
    def __init__(self, records: list[bytes] | None = None) -> None:
        self.frontier = Frontier()
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.records: list[bytes] = []
        self.made = 0
        for r in records or []:
            self.add(r)

    def add(self, record: bytes) -> None:
        made = self.frontier.append(leaf_hash(record))
        self.made += len(made)
        for level, index, h in made:
            assert (level, index) not in self.nodes  # every node is made once
            self.nodes[(level, index)] = h
        self.records.append(record)

    def fetch(self, wanted: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        return {n: self.nodes[n] for n in wanted}


def _records(n: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randrange(0, 40)) for _ in range(n)]


def _hex(hashes: list[bytes]) -> list[str]:
    return [h.hex() for h in hashes]


def test_known_roots_of_the_certificate_transparency_test_data() -> None:
    assert merkle.fold([]) == EMPTY_ROOT
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    tree = Tree()
    assert tree.frontier.root() == EMPTY_ROOT
    for i, record in enumerate(LEAVES, start=1):
        tree.add(record)
        assert tree.frontier.root().hex() == ROOTS[i]
        assert mth(LEAVES[:i]).hex() == ROOTS[i]  # the naive tree agrees with the vectors


def test_known_inclusion_and_consistency_proofs() -> None:
    tree = Tree(LEAVES)
    for (index, size), want in INCLUSION.items():
        got = prove(inclusion_plan(index, size), tree.fetch)
        assert _hex(got) == want
        root = bytes.fromhex(ROOTS[size])
        assert verify_inclusion(index, size, leaf_hash(LEAVES[index]), got, root)
    for (old, new), want in CONSISTENCY.items():
        got = prove(consistency_plan(old, new), tree.fetch)
        assert _hex(got) == want
        assert verify_consistency(
            old, new, bytes.fromhex(ROOTS[old]), bytes.fromhex(ROOTS[new]), got
        )


def test_stored_nodes_are_the_complete_subtrees_and_few() -> None:
    records = _records(300)
    tree = Tree(records)
    for (level, index), h in tree.nodes.items():
        start = index << level
        assert start + (1 << level) <= len(records)
        assert h == mth(records[start : start + (1 << level)])
    # Every complete subtree is there: n leaves have 2n - popcount(n) of them.
    assert len(tree.nodes) == 2 * 300 - (300).bit_count() == tree.made


def test_every_proof_up_to_70_leaves_equals_the_naive_one_and_verifies() -> None:
    records = _records(70, seed=3)
    tree = Tree(records)
    for n in range(1, 71):
        d = records[:n]
        root = mth(d)
        assert root_at(n, tree.fetch) == root
        for m in range(n):
            got = prove(inclusion_plan(m, n), tree.fetch)
            assert got == path(m, d), (m, n)
            assert verify_inclusion(m, n, leaf_hash(d[m]), got, root)
        for m in range(1, n + 1):
            got = prove(consistency_plan(m, n), tree.fetch)
            assert got == consistency(m, d), (m, n)
            assert verify_consistency(m, n, mth(d[:m]), root, got)


def test_stored_indexes_number_the_nodes_in_the_order_they_complete() -> None:
    frontier = Frontier()
    made = []
    for i in range(200):
        made.extend((lv, ix) for lv, ix, _ in frontier.append(leaf_hash(bytes([i % 256]))))
    assert [merkle.stored_index(lv, ix) for lv, ix in made] == list(range(len(made)))
    # Go's tlog.StoredHashIndex(level, n), by hand: leaf 3 is 4, its parents 5 and 6.
    assert [merkle.stored_index(0, 3), merkle.stored_index(1, 1), merkle.stored_index(2, 0)] == [
        4,
        5,
        6,
    ]


def test_a_frontier_loaded_from_stored_nodes_continues_the_same_tree() -> None:
    records = _records(45, seed=5)
    whole = Tree(records)
    for cut in (0, 1, 2, 7, 16, 31, 44):
        first = Tree(records[:cut])
        resumed = Frontier.load(cut, first.nodes)
        for r in records[cut:]:
            for level, index, h in resumed.append(leaf_hash(r)):
                assert whole.nodes[(level, index)] == h
        assert resumed.root() == whole.frontier.root()


def test_proof_requests_outside_the_tree_are_refused() -> None:
    with pytest.raises(ProofError):
        inclusion_plan(5, 5)
    with pytest.raises(ProofError):
        inclusion_plan(-1, 5)
    with pytest.raises(ProofError):
        consistency_plan(6, 5)
    with pytest.raises(ProofError):
        Frontier.load(3, {})  # nodes missing
    assert consistency_plan(0, 5) == [] and consistency_plan(5, 5) == []


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 3000), data=st.data())
def test_any_tampering_with_a_proof_fails_verification(n: int, data: st.DataObject) -> None:
    records = [i.to_bytes(4, "big") for i in range(n)]
    tree = Tree(records)
    root = tree.frontier.root()
    m = data.draw(st.integers(0, n - 1))
    proof = prove(inclusion_plan(m, n), tree.fetch)
    leaf = leaf_hash(records[m])
    assert verify_inclusion(m, n, leaf, proof, root)
    assert not verify_inclusion(m, n, leaf_hash(b"other"), proof, root)
    assert not verify_inclusion((m + 1) % n, n, leaf, proof, root)
    assert not verify_inclusion(m, m, leaf, proof, root)
    assert not verify_inclusion(m, n, leaf, [*proof, root], root)
    if proof:
        i = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 1]) + bad[i][1:]
        assert not verify_inclusion(m, n, leaf, bad, root)
        assert not verify_inclusion(m, n, leaf, proof[:-1], root)

    old = data.draw(st.integers(1, n - 1))
    old_root = root_at(old, tree.fetch)
    cproof = prove(consistency_plan(old, n), tree.fetch)
    assert verify_consistency(old, n, old_root, root, cproof)
    assert not verify_consistency(old, n, leaf_hash(b"x"), root, cproof)
    assert not verify_consistency(old, n, old_root, leaf_hash(b"x"), cproof)
    assert not verify_consistency(old, n, old_root, root, cproof[:-1])
    assert not verify_consistency(old, n, old_root, root, [*cproof, root])
    j = data.draw(st.integers(0, len(cproof) - 1))
    bad = list(cproof)
    bad[j] = bytes([bad[j][0] ^ 1]) + bad[j][1:]
    assert not verify_consistency(old, n, old_root, root, bad)


def test_a_rewritten_record_breaks_consistency_with_the_old_head() -> None:
    records = _records(100, seed=9)
    before = Tree(records[:60])
    old_root = before.frontier.root()
    rewritten = list(records)
    rewritten[17] = b"changed"
    after = Tree(rewritten)
    proof = prove(consistency_plan(60, 100), after.fetch)
    assert not verify_consistency(60, 100, old_root, after.frontier.root(), proof)
    honest = Tree(records)
    proof = prove(consistency_plan(60, 100), honest.fetch)
    assert verify_consistency(60, 100, old_root, honest.frontier.root(), proof)


def test_a_proof_needs_few_nodes_even_in_a_large_tree() -> None:
    # Plans only: a tree of a billion leaves needs no more than ~2 log2(n) nodes.
    n = 1_000_000_007
    for m in (0, 1, n // 2, n - 2, n - 1):
        assert len(merkle.plan_nodes(inclusion_plan(m, n))) <= 2 * n.bit_length()
    for old in (1, 2, n // 3, n - 1):
        assert len(merkle.plan_nodes(consistency_plan(old, n))) <= 3 * n.bit_length()

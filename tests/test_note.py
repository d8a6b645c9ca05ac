"""Signed notes, keys and checkpoint bodies, against the published Go test vector and by misuse.

The PeterNeumann key and note are the test vector of Go's
``golang.org/x/mod/sumdb/note``: the same key text must give the same key
ID and the same signed note, byte for byte.
"""

from __future__ import annotations

import base64
import pickle

import pytest

from sada.pipeline.domain.errors import SignatureError
from sada.pipeline.domain.merkle import EMPTY_ROOT
from sada.pipeline.domain.note import Signer, Verifier, key_id, open_note
from sada.pipeline.domain.tlog_checkpoint import TreeHead, origin

GO_SIGNER = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZ"
    "SNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def test_the_go_test_vector_signs_and_opens_byte_for_byte() -> None:
    signer = Signer.parse(GO_SIGNER)
    assert signer.key_id == 0xC74F20A3
    assert signer.verifier.text() == GO_VERIFIER
    assert signer.secret_text() == GO_SIGNER
    assert signer.sign(GO_TEXT) == GO_NOTE  # Ed25519 is deterministic
    note = open_note(GO_NOTE, [Verifier.parse(GO_VERIFIER)])
    assert note.text == GO_TEXT
    assert [(s.name, s.key_id) for s in note.signatures] == [("PeterNeumann", 0xC74F20A3)]


def test_key_id_is_the_first_four_bytes_of_the_named_key_hash() -> None:
    v = Verifier.parse(GO_VERIFIER)
    assert key_id("PeterNeumann", v.public_key) == 0xC74F20A3
    assert key_id("PeterNeumann2", v.public_key) != 0xC74F20A3


def test_the_secret_never_shows() -> None:
    signer = Signer.generate("sada.example/key-1")
    secret = signer.secret_text().rsplit("+", 1)[1]
    for shown in (repr(signer), str(signer), f"{signer}", signer.verifier.text()):
        assert secret not in shown
    with pytest.raises(TypeError):
        pickle.dumps(signer)
    assert Signer.parse(signer.secret_text()).verifier == signer.verifier


@pytest.mark.parametrize(
    "text",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong key ID
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # space in name
        "PeterNeumann+c74f20a3+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # algorithm
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",  # short
        "PeterNeumann+c74f20a3",
        "PeterNeumann+xyz+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_malformed_verifier_keys_are_refused(text: str) -> None:
    with pytest.raises(SignatureError):
        Verifier.parse(text)


def test_malformed_signer_keys_are_refused() -> None:
    with pytest.raises(SignatureError):
        Signer.parse(GO_VERIFIER)
    with pytest.raises(SignatureError):
        Signer.parse(GO_SIGNER.replace("c74f20a3", "c74f20a4"))


def test_a_changed_text_or_signature_or_unknown_key_is_rejected() -> None:
    verifier = Verifier.parse(GO_VERIFIER)
    with pytest.raises(SignatureError, match="does not verify"):
        open_note(GO_NOTE.replace("answer", "Answer"), [verifier])
    with pytest.raises(SignatureError, match="no known key"):
        open_note(GO_NOTE, [Signer.generate("PeterNeumann").verifier])
    with pytest.raises(SignatureError, match="malformed"):
        open_note(GO_TEXT, [verifier])
    with pytest.raises(SignatureError, match="malformed"):
        open_note(GO_NOTE.replace("—", "-"), [verifier])
    with pytest.raises(SignatureError):
        open_note(GO_NOTE.replace("\n—", "\n\x01—"), [verifier])


def test_a_second_unknown_signature_is_ignored_as_the_specification_says() -> None:
    other = Signer.generate("witness.example/w1")
    cosigned = GO_NOTE + other.sign(GO_TEXT).split("\n\n", 1)[1]
    note = open_note(cosigned, [Verifier.parse(GO_VERIFIER)])
    assert [s.name for s in note.unverified] == ["witness.example/w1"]
    both = open_note(cosigned, [Verifier.parse(GO_VERIFIER), other.verifier])
    assert len(both.signatures) == 2


def test_checkpoint_body_round_trip_and_strict_parsing() -> None:
    head = TreeHead(origin("sada.example.org", 3), 20852163, bytes(range(32)))
    text = head.text()
    assert text == (
        f"sada.example.org/archive/3\n20852163\n{base64.b64encode(bytes(range(32))).decode()}\n"
    )
    assert TreeHead.parse(text) == head
    assert head.partition("sada.example.org") == 3
    assert TreeHead.parse(TreeHead("o/archive/0", 0, EMPTY_ROOT).text()).size == 0
    for bad in (
        "o\n012\nAAAA\n",  # leading zero
        "o\n12\n" + base64.b64encode(b"x" * 31).decode() + "\n",  # not 32 bytes
        "o\n12\n",  # too few lines
        "o\n-1\n" + base64.b64encode(b"x" * 32).decode() + "\n",
        "o\n1\n" + base64.b64encode(b"x" * 32).decode(),  # no final newline
    ):
        with pytest.raises(SignatureError):
            TreeHead.parse(bad)
    with pytest.raises(SignatureError):
        head.partition("other.example.org")

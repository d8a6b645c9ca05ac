"""C2SP signed notes with Ed25519 keys: sign, open, and the key texts that name the keys.

A signed note is a text ending in a newline, a blank line, and one or more
signature lines ``— <key name> <base64(key ID || signature)>``; the Ed25519
signature covers the text, its final newline included. A key is named (no
spaces, no ``+``) and identified by name and key ID::

    key ID = first 4 bytes of SHA-256(name || "\\n" || 0x01 || 32-byte public key)

The texts are those of Go's ``golang.org/x/mod/sumdb/note``, so either side
reads the other's keys:

- verifier key (public): ``<name>+<key ID as 8 hex digits>+<base64(0x01 || public key)>``
- signer key (secret): ``PRIVATE+KEY+<name>+<key ID>+<base64(0x01 || 32-byte seed)>``

A :class:`Signer` never shows its secret in ``repr`` or ``str``; only
:meth:`Signer.secret_text` gives it, for writing the key file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from sada.pipeline.domain.errors import SignatureError, UnknownKeyError

ALG_ED25519 = 1
SIGNATURE_PREFIX = "— "  # em dash (U+2014), space
MAX_SIGNATURES = 100  # more is refused, as Go's reader does


def is_valid_name(name: str) -> bool:
    """A key name: non-empty, no Unicode space, no ``+``."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def key_id(name: str, public_key: bytes) -> int:
    """The 32-bit ID of an Ed25519 ``public_key`` (32 bytes) named ``name``."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()
    return int(struct.unpack(">I", digest[:4])[0])


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise SignatureError(f"{what}: not base64") from e


def _split_key(text: str, parts: int, what: str) -> list[str]:
    fields = text.strip().split("+", parts - 1)
    if len(fields) != parts:
        raise SignatureError(f"{what}: expected {parts} fields separated by '+'")
    return fields


def _key_fields(name: str, hash_hex: str, data64: str, what: str) -> tuple[int, bytes]:
    """The key ID and the 32 key bytes after the algorithm byte, checked."""
    if not is_valid_name(name):
        raise SignatureError(f"{what}: {name!r} is not a key name (no spaces, no '+')")
    if len(hash_hex) != 8 or any(c not in "0123456789abcdefABCDEF" for c in hash_hex):
        raise SignatureError(f"{what}: the key ID must be 8 hex digits")
    data = _b64decode(data64, what)
    if len(data) != 33 or data[0] != ALG_ED25519:
        raise SignatureError(f"{what}: not an Ed25519 key (algorithm byte 0x01, 32 key bytes)")
    return int(hash_hex, 16), data[1:]


@dataclass(frozen=True, slots=True)
class Verifier:
    """A public key that checks signatures of one named key."""

    name: str
    key_id: int
    public_key: bytes  # 32 bytes

    @classmethod
    def parse(cls, text: str) -> Verifier:
        """A verifier from its key text ``name+hash+base64(0x01 || key)``."""
        name, hash_hex, data64 = _split_key(text, 3, "verifier key")
        kid, public = _key_fields(name, hash_hex, data64, "verifier key")
        if kid != key_id(name, public):
            raise SignatureError(f"verifier key {name}: the key ID does not match the key")
        return cls(name, kid, public)

    def text(self) -> str:
        data = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_id:08x}+{data}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


class Signer:
    """An Ed25519 signing key with its name. Its ``repr`` shows the name and key ID only."""

    __slots__ = ("_private", "key_id", "name", "public_key")

    def __init__(self, name: str, seed: bytes) -> None:
        if not is_valid_name(name):
            raise SignatureError(f"{name!r} is not a key name (no spaces, no '+')")
        if len(seed) != 32:
            raise SignatureError("an Ed25519 private key is 32 bytes")
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self.name = name
        self.public_key = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = key_id(name, self.public_key)

    @classmethod
    def generate(cls, name: str) -> Signer:
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        seed = Ed25519PrivateKey.generate().private_bytes(
            Encoding.Raw, PrivateFormat.Raw, NoEncryption()
        )
        return cls(name, seed)

    @classmethod
    def parse(cls, text: str) -> Signer:
        """A signer from its key text ``PRIVATE+KEY+name+hash+base64(0x01 || seed)``."""
        fields = _split_key(text, 5, "signing key")
        if fields[0] != "PRIVATE" or fields[1] != "KEY":
            raise SignatureError("signing key: must start with PRIVATE+KEY+")
        name, hash_hex, data64 = fields[2:]
        kid, seed = _key_fields(name, hash_hex, data64, "signing key")
        signer = cls(name, seed)
        if signer.key_id != kid:
            raise SignatureError(f"signing key {name}: the key ID does not match the key")
        return signer

    def secret_text(self) -> str:
        """The signer key text: the secret itself, for the key file and nothing else."""
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        seed = self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        data = base64.b64encode(bytes([ALG_ED25519]) + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{data}"

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.key_id, self.public_key)

    def sign(self, text: str) -> str:
        """The signed note of ``text`` (which must end in a newline)."""
        _check_text(text)
        signature = self._private.sign(text.encode())
        blob = base64.b64encode(struct.pack(">I", self.key_id) + signature).decode()
        return f"{text}\n{SIGNATURE_PREFIX}{self.name} {blob}\n"

    def __repr__(self) -> str:
        return f"Signer({self.name}+{self.key_id:08x})"

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[object, ...]:
        # Pickling would carry the secret into whatever the pickle reaches.
        raise TypeError("a Signer is not to be pickled")


@dataclass(frozen=True, slots=True)
class Signature:
    name: str
    key_id: int
    base64: str


@dataclass(frozen=True, slots=True)
class Note:
    """An opened note: its text and the signatures that verified (and those of unknown keys)."""

    text: str
    signatures: tuple[Signature, ...]
    unverified: tuple[Signature, ...] = ()


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise SignatureError("a note's text must end with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise SignatureError("a note may hold no control character but newline")


def open_note(message: str, verifiers: Iterable[Verifier]) -> Note:
    """Check ``message``'s signatures; its text if at least one known key signed it.

    As the C2SP specification says: signatures of unknown keys are ignored
    (kept as ``unverified``), a known key whose signature fails rejects the
    note, and a note no known key signed is rejected.
    """
    if any(ord(c) < 0x20 and c != "\n" for c in message):
        raise SignatureError("malformed note: control character")
    split = message.rfind("\n\n")
    if split < 0:
        raise SignatureError("malformed note: no blank line before the signatures")
    text, block = message[: split + 1], message[split + 2 :]
    if not block or not block.endswith("\n"):
        raise SignatureError("malformed note: no signature lines")
    known = {(v.name, v.key_id): v for v in verifiers}
    good: list[Signature] = []
    unknown: list[Signature] = []
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise SignatureError(f"malformed note: more than {MAX_SIGNATURES} signatures")
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise SignatureError("malformed note: a signature line must start with an em dash")
        name, _, blob64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
        if not is_valid_name(name) or not blob64:
            raise SignatureError("malformed note: bad signature line")
        blob = _b64decode(blob64, "signature")
        if len(blob) < 5:
            raise SignatureError("malformed note: signature too short")
        kid = int(struct.unpack(">I", blob[:4])[0])
        sig = Signature(name, kid, blob64)
        verifier = known.get((name, kid))
        if verifier is None:
            if sig not in unknown:
                unknown.append(sig)
            continue
        if not verifier.verify(text.encode(), blob[4:]):
            raise SignatureError(f"the signature of key {name}+{kid:08x} does not verify")
        if sig not in good:
            good.append(sig)
    if not good:
        names = ", ".join(f"{s.name}+{s.key_id:08x}" for s in unknown) or "none"
        raise UnknownKeyError(f"no known key signed this note (signed by: {names})")
    return Note(text, tuple(good), tuple(unknown))

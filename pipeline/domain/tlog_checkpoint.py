"""C2SP tlog-checkpoint bodies: what a signed tree head of one archive partition says.

The note text is three lines, each ending in a newline::

    <origin>
    <tree size, ASCII decimal, no leading zeroes>
    <base64 of the RFC 9162 root hash>

Sada's origin names the deployment and the partition, ``<deployment>/archive/<p>``
(for example ``sada.example.org/archive/3``): each partition is its own log,
with its own tree. One key signs every partition's checkpoints, so the key name
(the deployment's, see the README) does not match each origin, which C2SP
recommends but does not require. Sada writes no extension lines; parsing
keeps any it finds, as the format allows.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from sada.pipeline.domain.errors import SignatureError
from sada.pipeline.domain.merkle import HASH_SIZE

ORIGIN_PART = "/archive/"


def origin(deployment: str, partition: int) -> str:
    return f"{deployment}{ORIGIN_PART}{partition}"


def is_valid_deployment(name: str) -> bool:
    """A deployment name fit for an origin and a key name: no spaces, no ``+``, not empty."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


@dataclass(frozen=True, slots=True)
class TreeHead:
    """One checkpoint body: the tree of ``origin`` had ``size`` leaves and this ``root``."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        """The note text to sign."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        return "".join(f"{line}\n" for line in (*lines, *self.extensions))

    @classmethod
    def parse(cls, text: str) -> TreeHead:
        """The checkpoint a note text states; :class:`SignatureError` if it is not one."""
        if not text.endswith("\n"):
            raise SignatureError("checkpoint: the text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3 or any(not line for line in lines):
            raise SignatureError("checkpoint: expected at least three non-empty lines")
        origin_, size_text, root64, *extensions = lines
        if not size_text.isascii() or not size_text.isdigit() or str(int(size_text)) != size_text:
            raise SignatureError(f"checkpoint: tree size {size_text!r} is not a decimal number")
        try:
            root = base64.b64decode(root64, validate=True)
        except (binascii.Error, ValueError) as e:
            raise SignatureError("checkpoint: the root hash is not base64") from e
        if len(root) != HASH_SIZE:
            raise SignatureError(f"checkpoint: the root hash is {len(root)} bytes, not 32")
        return cls(origin_, int(size_text), root, tuple(extensions))

    def partition(self, deployment: str | None = None) -> int:
        """The partition this origin names (of ``deployment``, when given)."""
        prefix, sep, number = self.origin.rpartition(ORIGIN_PART)
        if (
            not sep
            or not number.isascii()
            or not number.isdigit()
            or str(int(number)) != number
            or (deployment is not None and prefix != deployment)
        ):
            expected = f"{deployment or '<deployment>'}{ORIGIN_PART}<partition>"
            raise SignatureError(f"checkpoint origin {self.origin!r} is not {expected}")
        return int(number)

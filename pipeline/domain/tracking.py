"""Tracking codes: the number an author quotes to follow a submission up.

On the wire a tracking code is 8 to 12 ASCII digits whose last digit is the
Damm check digit of the others. The Damm check detects every single mistyped
digit and every swap of two adjacent digits, the two commonest mistakes when a
number is read out over the phone or copied from a receipt, so a lookup can
tell "no such code" from "you mistyped it". People type codes with Persian
(۰–۹), Arabic-Indic (٠–٩) or Latin digits, with spaces or dashes; lookups
accept all of these.
"""

from __future__ import annotations

import random
import secrets
import unicodedata

from sada.pipeline.domain.text import ascii_digits

MIN_LENGTH = 8
MAX_LENGTH = 12

# The totally anti-symmetric quasigroup of order 10 from H. M. Damm's thesis
# (2004), as tabulated in the literature on the algorithm.
_DAMM = (
    (0, 3, 1, 7, 5, 9, 8, 6, 4, 2),
    (7, 0, 9, 2, 1, 5, 4, 8, 6, 3),
    (4, 2, 0, 6, 8, 7, 1, 3, 5, 9),
    (1, 7, 5, 0, 9, 8, 3, 4, 2, 6),
    (6, 1, 2, 3, 0, 4, 5, 9, 7, 8),
    (3, 6, 7, 4, 2, 0, 9, 5, 8, 1),
    (5, 8, 6, 9, 7, 2, 0, 1, 3, 4),
    (8, 9, 4, 5, 3, 6, 2, 0, 1, 7),
    (9, 4, 3, 8, 6, 1, 7, 2, 0, 5),
    (2, 5, 8, 1, 4, 3, 6, 7, 9, 0),
)

_SYSTEM_RANDOM = secrets.SystemRandom()


def _is_ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _interim(digits: str) -> int:
    interim = 0
    for ch in digits:
        interim = _DAMM[interim][ord(ch) - 48]
    return interim


def damm_check_digit(digits: str) -> str:
    """Return the Damm check digit of a string of ASCII digits (``"572"`` → ``"4"``).

    Raises ``ValueError`` if ``digits`` is empty or holds anything but ASCII
    digits: that is a programming error, not bad input from outside.
    """
    if not digits or not _is_ascii_digits(digits):
        raise ValueError(f"expected ASCII digits, got {digits!r}")
    return str(_interim(digits))


def is_valid_tracking_code(code: str) -> bool:
    """True if ``code`` is 8–12 ASCII digits ending in the Damm check digit of the rest."""
    return MIN_LENGTH <= len(code) <= MAX_LENGTH and _is_ascii_digits(code) and _interim(code) == 0


def new_tracking_code(rng: random.Random | None = None, length: int = 10) -> str:
    """Return a fresh valid tracking code of ``length`` digits, not starting with 0.

    Codes come from the operating system's random source unless ``rng`` is
    given (seeded generators make simulations repeatable): whoever holds a
    code can follow its submission, so production codes must not be guessable
    from earlier ones. Uniqueness is the caller's concern. Raises
    ``ValueError`` if ``length`` is outside 8..12.
    """
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise ValueError(f"tracking code length must be {MIN_LENGTH}..{MAX_LENGTH}, got {length}")
    source = rng if rng is not None else _SYSTEM_RANDOM
    # A leading zero is lost when a code passes through a spreadsheet or a
    # phone keypad form that stores numbers.
    body = str(source.randint(1, 9)) + "".join(str(source.randint(0, 9)) for _ in range(length - 2))
    return body + damm_check_digit(body)


def normalize_code(text: str) -> str:
    """Return ``text`` with Persian and Arabic-Indic digits as ASCII, without separators.

    White space, dashes and invisible formatting characters (direction marks,
    zero-width joiners, often pasted along with a code) are removed; anything
    else is kept, so the result is not necessarily a valid code:
    ``normalize_code("۷۸۱۶ ۸۳۸")`` is ``"7816838"``.
    """
    text = ascii_digits(unicodedata.normalize("NFKC", text))
    return "".join(ch for ch in text if not _is_separator(ch))


def _is_separator(ch: str) -> bool:
    if ch.isspace() or ch == "-":
        return True
    if ch.isascii():
        return False
    category = unicodedata.category(ch)
    # Pd: the dash family (‐ ‑ – — and others); Cf: invisible formatting;
    # U+2212 MINUS SIGN stands in for a dash in some fonts and keyboards.
    return category in ("Pd", "Cf") or ch == "\u2212"


def parse_tracking_code(text: str) -> str | None:
    """Return the tracking code typed in ``text``, or None if it cannot be one.

    ``text`` is normalised as by :func:`normalize_code`; the result must be a
    valid tracking code (length and check digit), else None: a code with a
    wrong check digit was mistyped and matches no submission.
    """
    code = normalize_code(text)
    return code if is_valid_tracking_code(code) else None

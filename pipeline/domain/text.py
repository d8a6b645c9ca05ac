"""Comparison keys for mixed Persian, Russian and Latin text.

Persian text reaches Sada in several spellings of the same words: Arabic
``ي``/``ك`` typed for Persian ``ی``/``ک``, zero-width non-joiners present or
lost, invisible direction marks pasted from chat apps, Persian, Arabic-Indic or
Latin digits. Sada stores what was sent; these functions only build keys for
comparing and searching, so two spellings of one text get one key.
"""

from __future__ import annotations

import unicodedata

_PERSIAN_DIGITS = "۰۱۲۳۴۵۶۷۸۹"
_ARABIC_INDIC_DIGITS = "٠١٢٣٤٥٦٧٨٩"

_DIGITS = str.maketrans(
    {
        **{d: str(i) for i, d in enumerate(_PERSIAN_DIGITS)},
        **{d: str(i) for i, d in enumerate(_ARABIC_INDIC_DIGITS)},
    }
)

# Arabic letters that Persian keyboards and older systems substitute for the
# Persian ones, and hamza-carrying forms that Persian writes either way
# (تأکید / تاکید, مؤثر / موثر, پائیز / پاییز).
_LETTERS = {
    "ي": "ی",  # ARABIC LETTER YEH
    "ى": "ی",  # ARABIC LETTER ALEF MAKSURA
    "ك": "ک",  # ARABIC LETTER KAF
    "أ": "ا",
    "إ": "ا",
    "ٱ": "ا",
    "ؤ": "و",
    "ئ": "ی",
    "ۀ": "ه",
    "ة": "ه",
    "ё": "е",  # Russian writes ё as е as often as not
    "Ё": "е",
}

# Optional vowel marks and the tatweel (kashida) stretch letters without
# changing the word.
_DROPPED = [*range(0x064B, 0x0660), 0x0670, 0x0640]

_SEARCH = str.maketrans(
    {
        **{d: str(i) for i, d in enumerate(_PERSIAN_DIGITS)},
        **{d: str(i) for i, d in enumerate(_ARABIC_INDIC_DIGITS)},
        **_LETTERS,
        **dict.fromkeys(_DROPPED),
    }
)


def ascii_digits(text: str) -> str:
    """Return ``text`` with Persian (۰–۹) and Arabic-Indic (٠–٩) digits as ASCII."""
    return text.translate(_DIGITS)


def _visible(text: str) -> str:
    # Category Cf holds the zero-width non-joiner and joiner, direction marks
    # and isolates, the BOM and the soft hyphen: none of them changes a word.
    if text.isascii():
        return text
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def normalize_for_search(text: str) -> str:
    """Return the comparison key of ``text``; equal keys mean "the same text".

    The key is NFKC-normalised (Arabic presentation forms, full-width and
    compatibility characters fold to their plain letters), with Arabic
    yeh/kaf as Persian ی/ک, hamza forms and vowel marks folded away,
    zero-width non-joiners and other invisible formatting characters removed,
    digits in ASCII, case folded, and runs of white space as one space.

    The key is for comparison and search only: it is lossy by design and is
    never shown or stored in place of the original text.
    """
    key = unicodedata.normalize("NFKC", text).translate(_SEARCH)
    return " ".join(_visible(key).casefold().split())

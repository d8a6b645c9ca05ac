"""Titles and bodies for simulated traffic, built from the seed sentences shipped as package data.

Persian, English and Russian. Seed sentences are used as published (Arabic
``ي``/``ك``, lost zero-width non-joiners and all); the framing phrases are
written with zero-width non-joiners, and for some senders are "typed" the way
real input arrives: non-joiners dropped or turned into spaces, Arabic letters
for Persian ones. Every choice comes from the ``random.Random`` passed in, so
the same generator state gives the same text.
"""

from __future__ import annotations

import functools
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

LANGUAGES = ("fa", "en", "ru")
ZWNJ = "\u200c"
_PERSIAN_DIGITS = str.maketrans("0123456789", "۰۱۲۳۴۵۶۷۸۹")
_ARABIC_LETTERS = str.maketrans({"ی": "ي", "ک": "ك"})

# How often a sender's Persian loses its non-joiners / is typed with an Arabic
# keyboard layout: chat and SMS most, text keyed in by staff least.
_LOSES_ZWNJ = {"sms": 0.6, "telegram": 0.4, "whatsapp": 0.4, "web": 0.15, "email": 0.15}
_ARABIC_KEYBOARD = {"sms": 0.2, "telegram": 0.15, "whatsapp": 0.15}
_STAFF = "staff"


@dataclass(frozen=True)
class Composed:
    """A submission's text; ``topic`` is what responses to it talk about."""

    title: str
    body: str
    topic: str


class TextBank:
    """The shipped sentences and templates, and the rules for combining them."""

    def __init__(self, sentences: Sequence[Mapping[str, str]], templates: Mapping[str, Any]):
        by_lang: dict[str, list[str]] = {lang: [] for lang in LANGUAGES}
        for s in sentences:
            by_lang.setdefault(s["lang"], []).append(s["text"])
        self._sentences = {lang: tuple(texts) for lang, texts in by_lang.items()}
        self._t = templates
        self._unit_topics: tuple[tuple[str, str], ...] = tuple(
            (str(k), str(g)) for k, g in templates["unit_topics"]
        )

    def sentences(self, language: str) -> tuple[str, ...]:
        return self._sentences.get(language, ())

    def submission(
        self, rng: random.Random, *, kind: str, language: str, unit_id: str, channel: str
    ) -> Composed:
        t = self._t
        topic = rng.choice(t["topics"][self._topic_group(unit_id)][language])
        title = _capitalised(rng.choice(t["titles"][language][kind]).format(topic=topic))
        opener = _capitalised(rng.choice(t["openers"][language][kind]).format(topic=topic))
        parts = [_typed(opener, rng, language, channel)]
        for sentence in rng.sample(self._sentences[language], k=1 if rng.random() < 0.6 else 2):
            frame = rng.choice(t["frames"][language])
            parts.append(_typed(frame, rng, language, channel, verbatim=sentence))
        if rng.random() < 0.8:
            request = rng.choice(t["requests"][language][kind])
            parts.append(_typed(request, rng, language, channel))
        return Composed(_typed(title, rng, language, channel), " ".join(parts), topic)

    def response(
        self,
        rng: random.Random,
        *,
        kind: str,
        language: str,
        topic: str,
        tracking_code: str,
        unit_name: str = "",
    ) -> str:
        code = tracking_code
        if language == "fa" and rng.random() < 0.6:
            code = code.translate(_PERSIAN_DIGITS)
        template = rng.choice(self._t["responses"][language][kind])
        text = template.format(topic=topic, code=code, unit=_local_name(unit_name, language))
        return _typed(text, rng, language, _STAFF)

    def rating_comment(self, rng: random.Random, rating: int, language: str) -> str:
        band = "low" if rating <= 2 else "mid" if rating == 3 else "high"
        return _typed(rng.choice(self._t["rating_comments"][language][band]), rng, language, "web")

    def withdrawal_reason(self, rng: random.Random, language: str, channel: str) -> str:
        return _typed(rng.choice(self._t["withdrawals"][language]), rng, language, channel)

    def _topic_group(self, unit_id: str) -> str:
        lowered = unit_id.lower()
        for keyword, group in self._unit_topics:
            if keyword in lowered:
                return group
        return "general"


@functools.cache
def text_bank() -> TextBank:
    """The text bank from the package data (read once per process)."""
    folder = resources.files("sada.producers.data")
    sentences = json.loads(folder.joinpath("sentences.json").read_text("utf-8"))["sentences"]
    templates = json.loads(folder.joinpath("templates.json").read_text("utf-8"))
    return TextBank(sentences, templates)


def _typed(
    template: str, rng: random.Random, language: str, channel: str, verbatim: str = ""
) -> str:
    """``template`` as this sender types it, with ``verbatim`` (a seed sentence) put in as is."""
    text = template
    if language == "fa":
        if rng.random() < _LOSES_ZWNJ.get(channel, 0.1):
            text = text.replace(ZWNJ, "" if rng.random() < 0.6 else " ")
        if rng.random() < _ARABIC_KEYBOARD.get(channel, 0.03):
            text = text.translate(_ARABIC_LETTERS)
    return text.replace("{s}", verbatim) if verbatim else text


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def _local_name(name: str, language: str) -> str:
    """The part of a bilingual unit name (``"فارسی / English"``) that suits ``language``."""
    if " / " not in name:
        return name
    persian, _, other = name.partition(" / ")
    return persian.strip() if language == "fa" else other.strip()

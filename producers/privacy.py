"""Pseudonymous person ids: a keyed hash of ``author.id``, ``voter_id`` and ``follower_id``.

Under the deployment's pseudonym key (``SADA_PSEUDONYM_KEY``, or the one
the embedded default keeps in its data directory: see
:mod:`sada.infra.pseudonym_key`), what reaches the topics, the canonical log
and the archive is ``p:<HMAC-SHA256 hex>`` of the id an integrator sent,
never the raw id (a student number, a phone number). The same id always
maps to the same pseudonym under one key, so one person stays one voter and
one author across channels and across replays; without the key the mapping
cannot be reversed or recomputed.

Pseudonymising is idempotent: an id that already is a pseudonym is kept, so
an event that passes through two producers, or is replayed, is not hashed
twice.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

PREFIX = "p:"
# The data fields that name a person directly (the author is nested: ``author.id``).
_PERSON_FIELDS = ("voter_id", "follower_id")
_PSEUDONYM = re.compile(r"p:[0-9a-f]{64}")


def is_pseudonym(value: object) -> bool:
    """Whether ``value`` already has the form of a pseudonym (``p:`` and 64 hex digits)."""
    return isinstance(value, str) and _PSEUDONYM.fullmatch(value) is not None


class Pseudonymizer:
    """Replaces person ids in Sada events by keyed hashes."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("a pseudonym key must not be empty")
        self._key = bytes(key)

    def __repr__(self) -> str:
        return "Pseudonymizer(key=<hidden>)"  # the key must not reach logs

    def pseudonym(self, person_id: str) -> str:
        """The pseudonym of ``person_id``; a pseudonym is returned unchanged."""
        if is_pseudonym(person_id):
            return person_id
        digest = hmac.new(self._key, person_id.encode("utf-8"), hashlib.sha256).hexdigest()
        return PREFIX + digest

    def apply(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``event`` with its person ids pseudonymised.

        They are ``data.author.id``, ``data.voter_id`` and ``data.follower_id``.

        Apply it to an event that has passed validation: a malformed id (with
        spaces, too long) would otherwise come out as a well-formed pseudonym
        and hide the fault. Fields that are absent or not strings are left
        as they are.
        """
        out = dict(event)
        data = out.get("data")
        if not isinstance(data, Mapping):
            return out
        data = dict(data)
        for name in _PERSON_FIELDS:
            value = data.get(name)
            if isinstance(value, str):
                data[name] = self.pseudonym(value)
        author = data.get("author")
        if isinstance(author, Mapping) and isinstance(author.get("id"), str):
            data["author"] = {**author, "id": self.pseudonym(author["id"])}
        out["data"] = data
        return out


def pseudonymize_event(ce: Mapping[str, Any], key: bytes | str) -> dict[str, Any]:
    """``ce`` with its person ids keyed-hashed: ``data.author.id``, ``voter_id``, ``follower_id``.

    The one function for every way in (the gateway, the SDK, events read from
    Kafka by ingress): pure, idempotent (a pseudonym stays as it is), and the
    same under one key wherever it runs.
    """
    return Pseudonymizer(key.encode("utf-8") if isinstance(key, str) else key).apply(ce)

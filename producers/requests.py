"""What an ingestion request brings, checked before any event is: its body, key, scope and rate.

Used by :mod:`sada.producers.gateway`: the body parsed into items (one JSON
object, an array, or NDJSON), the bearer key found among the integrators'
hashed keys, each item's ``source`` and type held against the key's scope,
and a token bucket per integrator.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from sada.infra import contracts, topics
from sada.pipeline.domain.config import Integrator
from sada.pipeline.domain.errors import EventRejectedError
from sada.pipeline.domain.reasons import Reason
from sada.producers.sources import source_problem

_BOM = b"\xef\xbb\xbf"
_SHOWN_CHARS = 80


# -- the body -------------------------------------------------------------------


class MalformedBodyError(Exception):
    """The body is neither a JSON value nor NDJSON with at least one JSON object."""


@dataclass(frozen=True, slots=True)
class BodyItem:
    """One event of a request body: its decoded value, or why it could not be decoded."""

    index: int
    line: int | None  # 1-based line of an NDJSON body
    value: Any
    error: EventRejectedError | None = None


def parse_body(body: bytes, *, ndjson: bool, max_event_bytes: int) -> list[BodyItem]:
    """Split a request body into its events.

    A body that parses as JSON is one event (an object, or any other value,
    which validation will reject) or a batch (an array). Otherwise, or when
    ``ndjson`` is declared, each non-blank line is one event; a line that is
    not JSON, or larger than ``max_event_bytes``, is an item with an
    ``error``. Raises :class:`MalformedBodyError` if no reading yields a
    single JSON object.
    """
    text = body.removeprefix(_BOM)
    if not text.strip():
        raise MalformedBodyError(
            "the body is empty: expected a CloudEvent, a JSON array of them, or NDJSON"
        )
    whole_error = "declared NDJSON"
    if not ndjson:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            whole_error = str(e)
        else:
            if isinstance(value, list):
                return [BodyItem(i, None, v) for i, v in enumerate(value)]
            return [BodyItem(0, None, value)]
    items: list[BodyItem] = []
    for number, line in enumerate(text.split(b"\n"), start=1):
        if not line.strip():
            continue
        line = line.removesuffix(b"\r")
        try:
            items.append(BodyItem(len(items), number, contracts.decode(line, max_event_bytes)))
        except EventRejectedError as e:
            items.append(BodyItem(len(items), number, None, e))
    if not any(isinstance(item.value, dict) for item in items):
        if ndjson:
            raise MalformedBodyError("no line of the NDJSON body is a JSON object")
        raise MalformedBodyError(
            f"the body is not JSON ({whole_error}) nor NDJSON (no line is a JSON object)"
        )
    return items


# -- authentication and scope ------------------------------------------------------


class KeyRing:
    """Finds the integrator of a bearer key by its SHA-256, in time independent of the key."""

    def __init__(self, integrators: Sequence[Integrator]) -> None:
        self._entries = [(i, i.key_sha256.lower().encode("ascii")) for i in integrators]

    def find(self, key: str) -> Integrator | None:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest().encode("ascii")
        found: Integrator | None = None
        # Every entry is compared, even after a match, so timing says nothing
        # about which integrator (or how many) a key came close to.
        for integrator, expected in self._entries:
            if hmac.compare_digest(digest, expected) and found is None:
                found = integrator
        return found


def bearer_key(header: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, or None."""
    if not header:
        return None
    scheme, _, key = header.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return None
    return key


def source_allowed(source: str, prefixes: Sequence[str]) -> bool:
    """Whether ``source`` lies under one of ``prefixes``.

    A prefix matches whole path segments: ``/integrations/telegram`` allows
    ``/integrations/telegram`` and ``/integrations/telegram/bot-2`` but not
    ``/integrations/telegram-copy``. A prefix ending in ``/`` matches anything
    below it.
    """
    for prefix in prefixes:
        if not prefix or not source.startswith(prefix):
            continue
        rest = source[len(prefix) :]
        if not rest or prefix.endswith("/") or rest[0] in "/?#":
            return True
    return False


def scope_violations(integrator: Integrator, items: Sequence[BodyItem]) -> list[dict[str, Any]]:
    """One entry per event whose ``source`` or ``type`` the integrator may not publish.

    Only what an event states can be out of scope: an event with no string
    ``source`` or with a type Sada does not know is left to validation.
    """
    found = []
    for item in items:
        event = item.value
        if not isinstance(event, dict):
            continue
        problems = []
        source, type_ = event.get("source"), event.get("type")
        abnormal = source_problem(source) if isinstance(source, str) else None
        if abnormal is not None:
            problems.append(f"source {shown_short(source)} is not in normal form: {abnormal}")
        elif isinstance(source, str) and not source_allowed(source, integrator.sources):
            problems.append(
                f"source {shown_short(source)} is not under the sources of integrator "
                f"{integrator.id!r} ({', '.join(integrator.sources) or 'none'})"
            )
        if isinstance(type_, str) and type_ in contracts.EVENT_TYPES:
            if contracts.TOPIC_OF_TYPE[type_] not in topics.INPUT_TOPICS:
                problems.append(f"type {type_} is written by the pipeline only")
            elif type_ not in integrator.types:
                problems.append(f"type {type_} is not among the types of {integrator.id!r}")
        if problems:
            found.append(
                {
                    "index": item.index,
                    "id": event_id_of(event),
                    "reason": str(Reason.FORBIDDEN),
                    "detail": "; ".join(problems),
                }
            )
    return found


# -- rate ------------------------------------------------------------------------


class TokenBucket:
    """``rate`` tokens a second, holding at most ``burst``; charges may leave it in debt."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self._updated = now

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self.tokens = min(self.burst, self.tokens + (now - self._updated) * self.rate)
            self._updated = now

    def wait(self, now: float) -> float:
        """Seconds until the bucket admits a request (0: admitted now)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def charge(self, tokens: float, now: float) -> None:
        self._refill(now)
        self.tokens -= tokens


def event_id_of(value: object) -> str | None:
    if isinstance(value, dict):
        event_id = value.get("id")
        if isinstance(event_id, str):
            return event_id
    return None


def shown_short(value: object) -> str:
    if isinstance(value, str) and len(value) > _SHOWN_CHARS:
        shown = repr(value[:_SHOWN_CHARS])
        return shown[:-1] + "…" + shown[-1]
    return repr(value)

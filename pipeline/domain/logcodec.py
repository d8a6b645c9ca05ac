"""The canonical log's record format, and CloudEvent -> domain event decoding.

Every record of ``sada.log`` is one JSON object:

- ``{"v": 1, "kind": "event", "at": T, "late": bool, "topic": "sada.votes", "event": {...}}``
  where ``event`` is the accepted CloudEvent exactly as received (parsed) and
  ``at`` the instant it takes effect (its own time, or the pipeline clock if late);
- ``{"v": 1, "kind": "tick", "at": T}``: the pipeline clock reached ``T``.

Encoding is canonical (sorted keys, no spaces) so the archive's hashes are stable.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from sada.pipeline.domain.fold import EventRecord, LogRecord, TickRecord
from sada.pipeline.domain.model import (
    RESPONSE_POSTED,
    SATISFACTION_RATED,
    SUBMISSION_CREATED,
    SUBMISSION_WITHDRAWN,
    VOTE_CAST,
    VOTE_RETRACTED,
    DomainEvent,
    ResponsePosted,
    SatisfactionRated,
    SubmissionCreated,
    SubmissionWithdrawn,
    VoteCast,
    VoteRetracted,
    format_time,
    parse_time,
)

LOG_VERSION = 1


def event_key(ce: Mapping[str, Any]) -> str:
    """The idempotency key of a CloudEvent: its ``source`` and ``id`` together."""
    return f"{ce['source']} {ce['id']}"


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def encode_event(ce: Mapping[str, Any], at: datetime, late: bool, topic: str) -> bytes:
    return dumps(
        {
            "v": LOG_VERSION,
            "kind": "event",
            "at": format_time(at),
            "late": late,
            "topic": topic,
            "event": ce,
        }
    )


def encode_tick(at: datetime) -> bytes:
    return dumps({"v": LOG_VERSION, "kind": "tick", "at": format_time(at)})


def decode(raw: bytes) -> tuple[LogRecord, dict[str, Any] | None]:
    """A log record and, for events, the CloudEvent it carries."""
    obj = orjson.loads(raw)
    at_text = obj["at"]
    at = parse_time(at_text)
    if obj["kind"] == "tick":
        return TickRecord(at), None
    ce = obj["event"]
    # An event on time takes effect at its own time: one datetime for both.
    time = at if ce["time"] == at_text else None
    return EventRecord(to_domain(ce, time), at, bool(obj.get("late", False))), ce


def _shared(value: Any) -> Any:
    """One object per distinct value of a low-cardinality field (kind, unit, channel, ...).

    Decoding makes a fresh string per event; submission states keep these for
    as long as the submission lives, so sharing them keeps the state small.
    """
    return sys.intern(value) if type(value) is str else value


def _shared_or_none(value: str | None) -> str | None:
    return None if value is None else _shared(value)


def to_domain(ce: Mapping[str, Any], time: datetime | None = None) -> DomainEvent:
    """The domain event a (validated) CloudEvent carries; ``time``: its time, if parsed already."""
    key = event_key(ce)
    if time is None:
        time = parse_time(ce["time"])
    d = ce["data"]
    sid = d["submission_id"]
    t = ce["type"]
    if t == VOTE_CAST:
        return VoteCast(key, time, sid, d["voter_id"], _shared(d["stance"]))
    if t == VOTE_RETRACTED:
        return VoteRetracted(key, time, sid, d["voter_id"])
    if t == SUBMISSION_CREATED:
        author = d.get("author") or {}
        return SubmissionCreated(
            key,
            time,
            sid,
            d["tracking_code"],
            _shared(d["kind"]),
            _shared(d["unit_id"]),
            _shared(d["channel"]),
            _shared(author.get("role", "other")),
            bool(d.get("anonymous", False)),
        )
    if t == RESPONSE_POSTED:
        return ResponsePosted(
            key,
            time,
            sid,
            d["response_id"],
            _shared(d["unit_id"]),
            _shared(d["kind"]),
            _shared_or_none(d.get("referred_to_unit_id")),
        )
    if t == SATISFACTION_RATED:
        return SatisfactionRated(key, time, sid, int(d["rating"]))
    if t == SUBMISSION_WITHDRAWN:
        return SubmissionWithdrawn(key, time, sid)
    raise ValueError(f"not an input event type: {t!r}")

"""The canonical log's record format, and CloudEvent -> domain event decoding.

Every record of ``sada.log`` is one JSON object. What ingress members write
(version 2; any number of members, in any order):

- ``{"v": 2, "kind": "event", "topic": "sada.votes", "src": [topic, partition, offset],
  "event": {...}}``: a CloudEvent that passed validation, exactly as received
  (parsed), with the input position it came from; it is not ordered yet;
- ``{"v": 2, "kind": "mark", "inputs": [[topic, partition, T | null, idle], ...],
  "total": N, "wall": W}``: how far the writer's input partitions have got
  (``T``: the greatest event time seen; ``idle``: caught up and quiet), the
  number of input partitions in all, and the writer's wall clock;
- ``{"v": 2, "kind": "reject", "src": [...], "key": K, "reason": R, "detail": D,
  "type": TYPE, "value": base64 | null}``: an input that failed validation.

Records that are already in event-time order, with the instant they take
effect (version 1; written by tools that order a history themselves, such as
``sada replay --as-of``):

- ``{"v": 1, "kind": "event", "at": T, "late": bool, "topic": ..., "event": {...}}``;
- ``{"v": 1, "kind": "tick", "at": T}``: the clock reached ``T``.

Encoding is canonical (sorted keys, no spaces) so the archive's hashes are stable.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from sada.pipeline.domain.fold import EventRecord, LogRecord, TickRecord
from sada.pipeline.domain.model import (
    RESPONSE_POSTED,
    SATISFACTION_RATED,
    SUBMISSION_CREATED,
    SUBMISSION_FOLLOWED,
    SUBMISSION_UNFOLLOWED,
    SUBMISSION_WITHDRAWN,
    VOTE_CAST,
    VOTE_RETRACTED,
    DomainEvent,
    FollowChanged,
    ResponsePosted,
    SatisfactionRated,
    SubmissionCreated,
    SubmissionWithdrawn,
    VoteCast,
    VoteRetracted,
    format_time,
    parse_time,
)
from sada.pipeline.domain.records import (
    ForwardedEvent,
    InputMark,
    InputPosition,
    InputRejected,
    OrderedRecord,
    PartitionMark,
    RawRecord,
)

LOG_VERSION = 1  # records already in event-time order
FORWARD_VERSION = 2  # what ingress members write


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


def encode_forward(ce: Mapping[str, Any], topic: str, src: InputPosition) -> bytes:
    return dumps(
        {"v": FORWARD_VERSION, "kind": "event", "topic": topic, "src": list(src), "event": ce}
    )


def encode_mark(
    inputs: Sequence[PartitionMark], total: int, wall: datetime, mode: str, grace: float
) -> bytes:
    return dumps(
        {
            "mode": mode,
            "grace": grace,
            "v": FORWARD_VERSION,
            "kind": "mark",
            "inputs": [
                [m.topic, m.partition, None if m.time is None else format_time(m.time), m.idle]
                for m in inputs
            ],
            "total": total,
            "wall": format_time(wall),
        }
    )


def encode_reject(
    src: InputPosition,
    key: str,
    reason: str,
    detail: str,
    type_: str,
    value: bytes | None,
) -> bytes:
    return dumps(
        {
            "v": FORWARD_VERSION,
            "kind": "reject",
            "src": list(src),
            "key": key,
            "reason": reason,
            "detail": detail,
            "type": type_,
            "value": None if value is None else base64.b64encode(value).decode("ascii"),
        }
    )


def decode_raw(raw: bytes) -> RawRecord:
    """Any canonical-log record, as written: forwarded, marks, rejects, or already ordered."""
    obj = orjson.loads(raw)
    if obj.get("v") != FORWARD_VERSION:
        return _ordered(obj)
    kind = obj["kind"]
    if kind == "event":
        ce = obj["event"]
        src = obj["src"]
        return ForwardedEvent(ce, obj["topic"], (src[0], src[1], src[2]), event_key(ce))
    if kind == "mark":
        return InputMark(
            tuple(
                PartitionMark(t, p, None if at is None else parse_time(at), bool(idle))
                for t, p, at, idle in obj["inputs"]
            ),
            int(obj["total"]),
            parse_time(obj["wall"]),
            obj.get("mode", "wall"),
            float(obj.get("grace", 10.0)),
        )
    src = obj["src"]
    value = obj.get("value")
    return InputRejected(
        (src[0], src[1], src[2]),
        obj["key"],
        obj["reason"],
        obj["detail"],
        obj["type"],
        None if value is None else base64.b64decode(value),
    )


def _ordered(obj: dict[str, Any]) -> OrderedRecord:
    at_text = obj["at"]
    at = parse_time(at_text)
    if obj["kind"] == "tick":
        return OrderedRecord(TickRecord(at), None)
    ce = obj["event"]
    time = at if ce["time"] == at_text else None
    return OrderedRecord(EventRecord(to_domain(ce, time), at, bool(obj.get("late", False))), ce)


def decode(raw: bytes) -> tuple[LogRecord, dict[str, Any] | None]:
    """A version-1 (ordered) log record and, for events, the CloudEvent it carries."""
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
    if t in (SUBMISSION_FOLLOWED, SUBMISSION_UNFOLLOWED):
        return FollowChanged(key, time, sid, d["follower_id"], t == SUBMISSION_FOLLOWED)
    raise ValueError(f"not an input event type: {t!r}")

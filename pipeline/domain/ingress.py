"""Ingress decisions: validate input messages, order them by event time, feed the canonical log.

Pure logic (no Kafka): the runtime hands each input message to :meth:`Ingress.offer`
and calls :meth:`Ingress.poll` periodically; both return outputs to carry out:

- :class:`Release`: append a record to the canonical log (an accepted event or a tick);
- :class:`Reject`: send the input, unchanged, to ``sada.dlq`` with the reason;
- :class:`Absorb`: a redelivered event (same source and id): counted, nothing written.

Every input message ends in exactly one of the three, so accepted + rejected +
duplicates = received.

The pipeline clock (watermark) is the least event time every *active* input
partition has reached; a partition with no message for ``idle_seconds`` stops
holding it back, and when every partition is idle the wall clock moves it (in
``event`` clock mode, the greatest event time seen instead). Accepted events wait
in a buffer and are released in event-time order once the clock has reached
them; an event older than the clock on arrival is *late* and takes effect at the
clock. Votes and responses for a submission not yet seen wait ``grace_seconds``
for it before they are rejected as ``unknown_submission``.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sada.pipeline.domain.errors import EventRejectedError
from sada.pipeline.domain.logcodec import encode_event, encode_tick, event_key
from sada.pipeline.domain.model import RESPONSE_POSTED, SUBMISSION_CREATED, parse_time
from sada.pipeline.domain.reasons import Reason

InputPosition = tuple[str, int, int]  # topic, partition, offset


@dataclass(frozen=True, slots=True)
class InputMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def position(self) -> InputPosition:
        return (self.topic, self.partition, self.offset)


@dataclass(frozen=True, slots=True)
class Release:
    log_partition: int
    key: str
    value: bytes
    settles: InputPosition | None  # None for ticks
    type: str = ""
    channel: str = ""
    late: bool = False


@dataclass(frozen=True, slots=True)
class Reject:
    message: InputMessage
    reason: str
    detail: str
    type: str = "unknown"


@dataclass(frozen=True, slots=True)
class Absorb:
    message: InputMessage
    type: str


Output = Release | Reject | Absorb


@dataclass(slots=True)
class _Pending:
    time: datetime
    seq: int
    message: InputMessage = field(compare=False)
    event: dict[str, Any] = field(compare=False)


@dataclass(slots=True)
class _PartitionProgress:
    max_time: datetime | None = None
    last_seen: float = float("-inf")
    tracked_at: float = float("-inf")  # when assigned; see Ingress.track_partitions
    behind_at: float = float("-inf")  # when last known to hold unread records


class Ingress:
    def __init__(
        self,
        *,
        units: Iterable[str],
        log_partitions: int,
        partition_for: Callable[[str, int], int],
        decode: Callable[[bytes, int], dict[str, Any]],
        validate: Callable[[object], None],
        topic_of_type: Mapping[str, str],
        clock_mode: str = "wall",
        idle_seconds: float = 5.0,
        tick_seconds: float = 1.0,
        grace_seconds: float = 10.0,
        max_event_bytes: int = 65536,
    ) -> None:
        self.units = frozenset(units)
        self.log_partitions = log_partitions
        self._partition_for = partition_for
        self._decode = decode
        self._validate = validate
        self._topic_of_type = topic_of_type
        self.clock_mode = clock_mode
        self.idle_seconds = idle_seconds
        self.tick_seconds = tick_seconds
        self.grace_seconds = grace_seconds
        self.max_event_bytes = max_event_bytes

        self.clock: datetime | None = None  # the watermark
        self.released_at: datetime | None = None  # greatest effective instant released
        self._last_tick_at: datetime | None = None
        self._last_tick_wall = float("-inf")
        self._progress: dict[tuple[str, int], _PartitionProgress] = {}
        self._seq = itertools.count()
        # (time, seq, pending): tuples compare in C, a dataclass's __lt__ in Python.
        self._buffer: list[tuple[datetime, int, _Pending]] = []
        self._keys: set[str] = set()  # logged or buffered event keys
        self._submissions: set[str] = set()  # submissions in the log
        self._buffered_submissions: set[str] = set()  # created events waiting in the buffer
        self._tracking_codes: set[str] = set()
        self._waiting: dict[str, list[_Pending]] = {}  # submission id -> events waiting for it
        self._waiting_until: dict[str, float] = {}  # grace expiry of unknown submissions
        # The same expiries, soonest first, so a poll finds the due ones without a scan;
        # entries whose submission has come since are skipped when they surface.
        self._expiries: list[tuple[float, int, str]] = []
        self.settled_rejects: set[InputPosition] = set()
        # Events (source + id) already rejected: a redelivery is a duplicate, not a new error.
        self._rejected_keys: set[str] = set()

    # -- recovery -----------------------------------------------------------------

    def restore_logged(self, ce: Mapping[str, Any], at: datetime) -> None:
        """Learn an event already in the canonical log (on start, before any offer)."""
        self._keys.add(event_key(ce))
        data = ce.get("data") or {}
        if ce.get("type") == SUBMISSION_CREATED:
            self._submissions.add(data["submission_id"])
            self._tracking_codes.add(data["tracking_code"])
        self._advance_released(at)

    def restore_tick(self, at: datetime) -> None:
        self._advance_released(at)
        self._last_tick_at = at

    def restore_rejected(self, position: InputPosition, value: bytes | None = None) -> None:
        """An input already sent to ``sada.dlq``: it is settled, not to be rejected twice.

        ``value`` (the DLQ record's value, the input unchanged) names the event, when
        it has a readable ``source`` and ``id``, so that a later redelivery is absorbed.
        """
        self.settled_rejects.add(position)
        key = self._identity(value)
        if key is not None:
            self._rejected_keys.add(key)

    def _advance_released(self, at: datetime) -> None:
        if self.released_at is None or at > self.released_at:
            self.released_at = at
        if self.clock is None or at > self.clock:
            self.clock = at

    # -- input --------------------------------------------------------------------

    def track_partitions(
        self, partitions: Iterable[tuple[str, int]], now: float | None = None
    ) -> None:
        """Know the input partitions before they deliver.

        With ``now``, a partition that has delivered no event yet holds the clock
        back until ``idle_seconds`` after ``now``: a backlog it has not fetched yet
        must not be overtaken (and made late) by its neighbours' first messages.
        """
        for tp in partitions:
            prog = self._progress.setdefault(tp, _PartitionProgress())
            if now is not None:
                prog.tracked_at = now

    def backlogged(self, partition: tuple[str, int], now: float) -> None:
        """The consumer holds records of ``partition`` not offered yet: it is not idle.

        Idle means nothing new arrives at a partition, not that this process has
        not got to it: during a backfill or after a restart the consumer hands
        over one partition's backlog while others wait in its buffer, and a
        waiting partition must go on holding the clock back (at its last time,
        or entirely if it has delivered nothing yet), or the clock would run
        past its records and make them late.
        """
        prog = self._progress.setdefault(partition, _PartitionProgress())
        prog.last_seen = now
        prog.behind_at = now
        if prog.max_time is None:
            prog.tracked_at = now

    def offer(self, msg: InputMessage, now: float) -> list[Output]:
        """Take one input message; ``now`` is wall time in seconds (``time.time()``)."""
        out = self._take(msg, now)
        out.extend(self.poll(now))
        return out

    def offer_many(self, msgs: Iterable[InputMessage], now: float) -> list[Output]:
        """Take a fetched batch, then move the clock once: what :meth:`offer` does per message.

        The log may differ from offering one by one (the clock moves once, so
        fewer events count as late), but either order is a valid canonical log:
        decisions follow the log, not the batching.
        """
        out: list[Output] = []
        for msg in msgs:
            out.extend(self._take(msg, now))
        out.extend(self.poll(now))
        return out

    def _take(self, msg: InputMessage, now: float) -> list[Output]:
        prog = self._progress.get((msg.topic, msg.partition))
        if prog is None:
            prog = self._progress[(msg.topic, msg.partition)] = _PartitionProgress()
        prog.last_seen = now
        if msg.position in self.settled_rejects:
            return [Absorb(msg, "unknown")]
        try:
            ce = self._check(msg)
        except EventRejectedError as e:
            rejected = self._identity(msg.value)
            if rejected is not None:
                if rejected in self._rejected_keys or rejected in self._keys:
                    return [Absorb(msg, _type_of(msg))]
                self._rejected_keys.add(rejected)
            return [Reject(msg, e.reason, e.detail, _type_of(msg))]
        type_ = ce["type"]
        key = event_key(ce)
        if key in self._keys or key in self._rejected_keys:
            return [Absorb(msg, type_)]
        time = parse_time(ce["time"])
        if prog.max_time is None or time > prog.max_time:
            prog.max_time = time
        data = ce["data"]
        sid = data["submission_id"]
        if type_ == SUBMISSION_CREATED:
            if sid in self._submissions or sid in self._buffered_submissions:
                self._rejected_keys.add(key)
                return [
                    Reject(msg, Reason.DUPLICATE_SUBMISSION, f"submission {sid!r} exists", type_)
                ]
            if data["tracking_code"] in self._tracking_codes:
                self._rejected_keys.add(key)
                return [
                    Reject(
                        msg,
                        Reason.DUPLICATE_TRACKING_CODE,
                        f"tracking code {data['tracking_code']} is taken",
                        type_,
                    )
                ]
            self._buffered_submissions.add(sid)
            self._tracking_codes.add(data["tracking_code"])
            self._waiting_until.pop(sid, None)
        self._keys.add(key)
        pending = _Pending(time, next(self._seq), msg, ce)
        out: list[Output] = []
        known = sid in self._submissions or sid in self._buffered_submissions
        if not known:
            self._waiting.setdefault(sid, []).append(pending)
            if sid not in self._waiting_until:
                self._waiting_until[sid] = now + self.grace_seconds
                heapq.heappush(self._expiries, (now + self.grace_seconds, next(self._seq), sid))
        elif self.released_at is not None and time < self.released_at:
            # Late: the clock has passed it, so it takes effect now, at the clock.
            out.extend(self._release(pending, late=True))
        else:
            heapq.heappush(self._buffer, (time, pending.seq, pending))
        return out

    def _check(self, msg: InputMessage) -> dict[str, Any]:
        if msg.value is None:
            raise EventRejectedError(Reason.INVALID_JSON, "empty message (no value)")
        ce = self._decode(msg.value, self.max_event_bytes)
        self._validate(ce)
        type_ = ce["type"]
        expected = self._topic_of_type.get(type_)
        if expected != msg.topic:
            raise EventRejectedError(
                Reason.WRONG_TOPIC, f"{type_} belongs on {expected}, not {msg.topic}"
            )
        check_references(ce, self.units)
        return ce

    def _identity(self, value: bytes | None) -> str | None:
        """``source`` + ``id`` of a message that is a JSON object naming both, else None."""
        if value is None:
            return None
        try:
            obj = self._decode(value, self.max_event_bytes)
        except EventRejectedError:
            return None
        source, id_ = obj.get("source"), obj.get("id")
        if isinstance(source, str) and isinstance(id_, str) and source and id_:
            return event_key(obj)
        return None

    # -- time ---------------------------------------------------------------------

    def poll(self, now: float) -> list[Output]:
        """Move the clock, release what it has reached, expire grace, write ticks."""
        out: list[Output] = []
        # The grace is for a submission that never comes, not for one still unread in
        # a backlog of the submissions topic: while that topic is behind, nothing expires.
        expiries = self._expiries
        while expiries and expiries[0][0] <= now and not self._submissions_behind(now):
            until, _, sid = heapq.heappop(expiries)
            if self._waiting_until.get(sid) != until:
                continue  # its submission came, or a newer wait replaced this one
            del self._waiting_until[sid]
            for p in self._waiting.pop(sid, []):
                self._keys.discard(event_key(p.event))
                self._rejected_keys.add(event_key(p.event))
                out.append(
                    Reject(
                        p.message,
                        Reason.UNKNOWN_SUBMISSION,
                        f"no submission {sid!r} arrived within {self.grace_seconds:g}s",
                        p.event["type"],
                    )
                )
        candidate = self._watermark(now)
        if candidate is not None and (self.clock is None or candidate > self.clock):
            self.clock = candidate
        buffer = self._buffer
        while buffer and self.clock is not None and buffer[0][0] <= self.clock:
            out.extend(self._release(heapq.heappop(buffer)[2], late=False))
        if (
            self.clock is not None
            and (self._last_tick_at is None or self.clock > self._last_tick_at)
            and now - self._last_tick_wall >= self.tick_seconds
        ):
            tick = encode_tick(self.clock)
            out.extend(Release(p, "", tick, None) for p in range(self.log_partitions))
            self._advance_released(self.clock)
            self._last_tick_at, self._last_tick_wall = self.clock, now
        return out

    def _submissions_behind(self, now: float) -> bool:
        topic = self._topic_of_type.get(SUBMISSION_CREATED)
        return any(
            tp[0] == topic and now - prog.behind_at < self.idle_seconds
            for tp, prog in self._progress.items()
        )

    def _watermark(self, now: float) -> datetime | None:
        if any(
            p.max_time is None and now - p.tracked_at < self.idle_seconds
            for p in self._progress.values()
        ):
            return None  # a partition just assigned has reached no time yet
        active = [
            p.max_time
            for p in self._progress.values()
            if p.max_time is not None and now - p.last_seen < self.idle_seconds
        ]
        wall = datetime.fromtimestamp(now, UTC)
        if active:
            # A producer's clock running ahead must not push decisions into the future.
            return min(min(active), wall) if self.clock_mode == "wall" else min(active)
        if self.clock_mode == "wall":
            return wall
        seen = [p.max_time for p in self._progress.values() if p.max_time is not None]
        return max(seen) if seen else None

    def _release(self, p: _Pending, late: bool) -> list[Output]:
        ce = p.event
        data = ce["data"]
        sid = data["submission_id"]
        if ce["type"] != SUBMISSION_CREATED and sid not in self._submissions:
            # Its submission is buffered with a later time: it follows the submission.
            self._waiting.setdefault(sid, []).append(p)
            return []
        at = p.time
        if self.released_at is not None and at < self.released_at:
            at = self.released_at
        self._advance_released(at)
        out: list[Output] = [
            Release(
                self._partition_for(sid, self.log_partitions),
                sid,
                encode_event(ce, at, late, p.message.topic),
                p.message.position,
                ce["type"],
                str(data.get("channel", "")),
                late,
            )
        ]
        if ce["type"] == SUBMISSION_CREATED:
            self._buffered_submissions.discard(sid)
            self._submissions.add(sid)
            # What waited for the submission follows it in event-time order: back in the
            # buffer, released once the clock reaches each (at once if it already has).
            for w in self._waiting.pop(sid, []):
                heapq.heappush(self._buffer, (w.time, w.seq, w))
        return out

    @property
    def buffered(self) -> int:
        return len(self._buffer) + sum(len(v) for v in self._waiting.values())


def check_references(event: Mapping[str, Any], units: frozenset[str] | set[str]) -> None:
    """Reject a schema-valid event that names a unit the organisation does not have.

    Shared by ingress and the HTTP gateway, so both reject the same events.
    """
    data = event["data"]
    for field_name in ("unit_id", "referred_to_unit_id"):
        unit = data.get(field_name)
        if unit is not None and unit not in units:
            shown = unit if len(str(unit)) <= 80 else f"{str(unit)[:80]}…"
            raise EventRejectedError(
                Reason.UNKNOWN_UNIT, f"data.{field_name}: unknown unit {shown!r}"
            )
    if (
        event["type"] == RESPONSE_POSTED
        and data.get("kind") == "referral"
        and not data.get("referred_to_unit_id")
    ):
        raise EventRejectedError(
            Reason.SCHEMA_VIOLATION, "data.referred_to_unit_id: required for a referral"
        )


def _type_of(msg: InputMessage) -> str:
    """Best-effort event type of a rejected message, for metrics only."""
    return "unknown"

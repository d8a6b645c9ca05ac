"""Ingress decisions: validate input messages and forward them, unordered, to the canonical log.

Pure logic (no Kafka): the runtime hands each fetched batch of the input
partitions this member owns to :meth:`Ingress.offer_many`, and asks
:meth:`Ingress.marks` for watermarks after each batch and while idle. Every
output is one canonical-log record to append (:class:`Forward`):

- an event that passed validation (envelope, schema, tracking-code check digit,
  topic, known units, not stamped too far ahead), keyed and partitioned by its
  submission id;
- an input that failed, with the reason, keyed by its ``source`` and ``id``
  (or its input position when it has none), so that the projector writes it
  to ``sada.dlq`` once, however often it is delivered;
- a watermark per log partition: for each input partition this member owns,
  the greatest event time read from it and whether it is idle.

Ingress keeps nothing that grows with the events: duplicates, unknown
submissions and ordering are the projector's, which sees every record of a
submission in one log partition (:mod:`~sada.pipeline.domain.projector`).
So any number of members, each owning some input partitions, write a log that
decides the same, and a restart resumes from the committed input offsets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sada.pipeline.domain.errors import EventRejectedError
from sada.pipeline.domain.logcodec import encode_forward, encode_mark, encode_reject, event_key
from sada.pipeline.domain.model import RESPONSE_POSTED, parse_time
from sada.pipeline.domain.reasons import Reason
from sada.pipeline.domain.records import InputPosition, PartitionMark


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
class Forward:
    """One record to append to the canonical log."""

    log_partition: int
    key: str
    value: bytes
    settles: InputPosition | None  # the input it carries; None for watermarks
    type: str = ""
    rejected: str = ""  # the reason, when it carries a rejected input


@dataclass(slots=True)
class _Progress:
    max_time: datetime | None = None
    last_seen: float = float("-inf")  # when a message last arrived (or a backlog was seen)
    since: float = float("-inf")  # when this member took the partition


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
        max_future_seconds: float = 300.0,
        pseudonymize: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
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
        self.max_future = timedelta(seconds=max_future_seconds)
        # Person ids become pseudonyms before anything lasts (the log is archived).
        self._pseudonymize = pseudonymize
        self.total = 0  # input partitions in all, whoever owns them
        self._progress: dict[tuple[str, int], _Progress] = {}
        self._last_mark = float("-inf")
        self._reported: dict[tuple[str, int], bool] = {}  # idle flags in the last mark

    # -- ownership ----------------------------------------------------------------

    def assign(self, partitions: Iterable[tuple[str, int]], total: int, now: float) -> None:
        """The input partitions this member owns now (after a rebalance), of ``total``.

        A partition just taken holds the clock back until it has delivered or
        ``idle_seconds`` have passed: a backlog not fetched yet must not be
        overtaken by its neighbours' first messages.
        """
        owned = set(partitions)
        self._progress = {
            tp: self._progress.get(tp) or _Progress(since=now) for tp in sorted(owned)
        }
        self.total = total
        self._last_mark = float("-inf")  # tell the log at once

    def backlogged(self, partition: tuple[str, int], now: float) -> None:
        """The consumer holds records of ``partition`` not offered yet: it is not idle."""
        prog = self._progress.get(partition)
        if prog is not None:
            prog.last_seen = now

    @property
    def owned(self) -> list[tuple[str, int]]:
        return list(self._progress)

    # -- input --------------------------------------------------------------------

    def offer_many(self, msgs: Iterable[InputMessage], now: float) -> list[Forward]:
        """Take a fetched batch: one log record per message, in the batch's order."""
        out: list[Forward] = []
        wall = datetime.fromtimestamp(now, UTC)
        for msg in msgs:
            prog = self._progress.get((msg.topic, msg.partition))
            if prog is None:  # not (or no longer) ours; the stage filters, this is a guard
                prog = self._progress[(msg.topic, msg.partition)] = _Progress(since=now)
            prog.last_seen = now
            try:
                ce = self._check(msg, wall)
            except EventRejectedError as e:
                out.append(self._reject(msg, e.reason, e.detail))
                continue
            if self._pseudonymize is not None:
                ce = self._pseudonymize(ce)
            time = parse_time(ce["time"])
            if prog.max_time is None or time > prog.max_time:
                prog.max_time = time
            sid = ce["data"]["submission_id"]
            out.append(
                Forward(
                    self._partition_for(sid, self.log_partitions),
                    sid,
                    encode_forward(ce, msg.topic, msg.position),
                    msg.position,
                    ce["type"],
                )
            )
        return out

    def _check(self, msg: InputMessage, wall: datetime) -> dict[str, Any]:
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
        check_not_ahead(ce, wall, self.max_future)
        return ce

    def _reject(self, msg: InputMessage, reason: str, detail: str) -> Forward:
        named = self._identity(msg.value)
        key = named or f"@{msg.topic}/{msg.partition}/{msg.offset}"
        type_ = "unknown"
        return Forward(
            self._partition_for(key, self.log_partitions),
            key,
            encode_reject(msg.position, key, str(reason), detail, type_, msg.value),
            msg.position,
            type_,
            str(reason),
        )

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

    def marks_due(self, now: float, delivered: bool) -> bool:
        """A watermark is due after a batch that delivered, when a partition turns idle
        or active, and every ``tick_seconds``."""
        if not self._progress:
            return False
        if delivered or now - self._last_mark >= self.tick_seconds:
            return True
        return any(
            self._reported.get(tp) != self._idle(prog, now) for tp, prog in self._progress.items()
        )

    def marks(self, now: float) -> list[Forward]:
        """One watermark record per log partition, for the input partitions owned."""
        self._last_mark = now
        self._reported = {tp: self._idle(prog, now) for tp, prog in self._progress.items()}
        inputs = [
            PartitionMark(tp[0], tp[1], prog.max_time, self._idle(prog, now))
            for tp, prog in self._progress.items()
        ]
        value = encode_mark(
            inputs,
            self.total,
            datetime.fromtimestamp(now, UTC),
            self.clock_mode,
            self.grace_seconds,
        )
        return [Forward(p, "", value, None) for p in range(self.log_partitions)]

    def _idle(self, prog: _Progress, now: float) -> bool:
        quiet = now - prog.last_seen >= self.idle_seconds
        return quiet and now - prog.since >= self.idle_seconds

    @property
    def clock(self) -> datetime | None:
        """This member's own view of the clock: the least time its active partitions reached."""
        now = max((p.last_seen for p in self._progress.values()), default=0.0)
        active = [p.max_time for p in self._progress.values() if not self._idle(p, now)]
        times = [t for t in active if t is not None]
        if times:
            return min(times)
        seen = [p.max_time for p in self._progress.values() if p.max_time is not None]
        return max(seen) if seen else None


EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)


def check_not_ahead(event: Mapping[str, Any], wall: datetime, max_future: timedelta) -> None:
    """Reject an event stamped further ahead of the wall clock than ``max_future``,
    or before 1970 (no organisation's calendar reaches back that far).

    Shared by ingress and the HTTP gateway. An event from the future would hold
    decisions back, or (in ``event`` clock mode) push the clock ahead of time.
    """
    time = parse_time(event["time"])
    if time < EARLIEST_TIME:
        raise EventRejectedError(
            Reason.SCHEMA_VIOLATION, f"time {event['time']} is before 1970-01-01T00:00:00Z"
        )
    if time > wall + max_future:
        raise EventRejectedError(
            Reason.TIME_IN_FUTURE,
            f"time {event['time']} is more than {max_future.total_seconds():g}s ahead of the clock",
        )


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

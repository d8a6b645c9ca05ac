"""The integrator SDK: publish Sada events to Kafka with kafka-python.

:class:`SadaProducer` validates each event with the same validators as ingress
before sending it, so a bad event fails in the integrator's code instead of
landing in ``sada.dlq``. Every producer of Sada events (this SDK, ``sada
publish``, the HTTP gateway) writes the same bytes through
:func:`encode_event`: the topic of the event's type, the submission id as the
key, the compact JSON of the event as the value.

Sending is asynchronous, as with any Kafka producer: :meth:`SadaProducer.flush`
waits for the broker's acknowledgements and raises :class:`DeliveryError` if
any event sent since the last flush was not delivered. A redelivered event
(same ``source`` and ``id``) is harmless: ingress absorbs it.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import uuid
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import orjson
from kafka import KafkaProducer
from kafka.errors import KafkaError

from sada.infra import contracts, topics
from sada.pipeline.domain.errors import BrokerError, EventRejectedError, SadaError
from sada.pipeline.domain.model import (
    RESPONSE_POSTED,
    SATISFACTION_RATED,
    SUBMISSION_CREATED,
    SUBMISSION_FOLLOWED,
    SUBMISSION_UNFOLLOWED,
    SUBMISSION_WITHDRAWN,
    VOTE_CAST,
    VOTE_RETRACTED,
    format_time,
)
from sada.pipeline.domain.reasons import Reason
from sada.pipeline.domain.tracking import new_tracking_code
from sada.producers.events import build_event, topic_for
from sada.producers.privacy import Pseudonymizer

DEFAULT_LINGER_MS = 5


def encode_event(event: Mapping[str, Any]) -> tuple[str, bytes, bytes]:
    """``(topic, key, value)`` of a valid event, as every Sada producer writes it.

    The key is the submission id (UTF-8), so all events of one submission keep
    their order within one input partition; the value is compact JSON.
    """
    key = str(event["data"]["submission_id"]).encode("utf-8")
    return topic_for(event), key, orjson.dumps(event)


def complete_event(
    partial: Mapping[str, Any],
    *,
    source: str | None = None,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """Fill in what a hand-written event may leave out; keep everything it gives.

    Absent attributes get what :func:`~sada.producers.events.build_event`
    would give them: ``specversion``, a fresh ``id``, ``source`` (from the
    argument), ``time`` (``now``), ``subject`` (``data.submission_id``),
    ``datacontenttype``, ``dataschema`` (the current schema of ``type``), and
    for a new submission ``data.submission_id`` and ``data.tracking_code``.
    Nothing is validated here; an event that lacks what cannot be guessed
    (``type``, ``data``) is returned for validation to reject.
    """
    event = dict(partial)
    type_ = event.get("type")
    data = event.get("data")
    if isinstance(data, Mapping):
        data = dict(data)
        if type_ == SUBMISSION_CREATED:
            if "submission_id" not in data:
                data["submission_id"] = _uuid(rng)
            if "tracking_code" not in data:
                data["tracking_code"] = new_tracking_code(rng)
        event["data"] = data
    event.setdefault("specversion", "1.0")
    if "id" not in event:
        event["id"] = _uuid(rng)
    if "source" not in event and source is not None:
        event["source"] = source
    if "time" not in event:
        event["time"] = format_time(now or datetime.now(UTC))
    if "subject" not in event and isinstance(data, dict) and "submission_id" in data:
        event["subject"] = data["submission_id"]
    event.setdefault("datacontenttype", "application/json")
    if "dataschema" not in event and isinstance(type_, str) and type_ in contracts.EVENT_TYPES:
        event["dataschema"] = contracts.schema_id(type_)
    return event


class DeliveryError(BrokerError):
    """Some events handed to the producer were not acknowledged by the broker.

    ``failed`` counts them; ``reasons`` counts them by error name.
    """

    def __init__(self, failed: int, reasons: Counter[str], first: str) -> None:
        super().__init__(f"{failed} event(s) not delivered: {first}")
        self.failed = failed
        self.reasons = reasons


class SadaProducer:
    """A Kafka producer of Sada events (kafka-python, ``acks="all"``).

    ``source`` is the integrator's CloudEvents ``source``, used by the
    convenience methods (:meth:`submit`, :meth:`vote`, ...). With a
    ``pseudonymizer``, person ids are replaced by their pseudonyms before
    sending. Further keyword arguments go to :class:`kafka.KafkaProducer`.
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        source: str | None = None,
        pseudonymizer: Pseudonymizer | None = None,
        max_event_bytes: int = contracts.MAX_EVENT_BYTES,
        linger_ms: int = DEFAULT_LINGER_MS,
        **kafka_config: Any,
    ) -> None:
        self.source = source
        self.pseudonymizer = pseudonymizer
        self.max_event_bytes = max_event_bytes
        self._lock = threading.Lock()
        self._failures: Counter[str] = Counter()
        self._first_failure = ""
        config: dict[str, Any] = {"client_id": "sada-sdk", **kafka_config}
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms, **config
            )
        except KafkaError as e:
            raise BrokerError(f"cannot connect to Kafka at {bootstrap}: {_one_line(e)}") from e

    # -- sending ----------------------------------------------------------------

    def publish(self, event: Mapping[str, Any]) -> None:
        """Validate ``event`` and send it to the input topic of its type.

        Raises :class:`~sada.pipeline.domain.errors.EventRejectedError` (nothing is sent) if
        the event breaks the contract or, encoded, exceeds ``max_event_bytes``;
        :class:`~sada.pipeline.domain.errors.BrokerError` if Kafka cannot take it.
        """
        self._send(event)

    def publish_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        """Send ``value`` to ``topic`` exactly as given, unchecked (ingress will judge it)."""
        self._produce(topic, key, value)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every event sent so far is acknowledged or has failed.

        Raises :class:`DeliveryError` if any event sent since the previous
        flush was not delivered, :class:`~sada.pipeline.domain.errors.BrokerError` on timeout.
        """
        try:
            self._producer.flush(timeout)
        except KafkaError as e:
            raise BrokerError(f"flushing to Kafka failed: {_one_line(e)}") from e
        with self._lock:
            failures, first = self._failures, self._first_failure
            self._failures, self._first_failure = Counter(), ""
        if failures:
            raise DeliveryError(sum(failures.values()), failures, first)

    def close(self, timeout: float | None = None) -> None:
        """Flush and close; raises like :meth:`flush` if anything was not delivered."""
        try:
            self.flush(timeout)
        finally:
            try:
                self._producer.close(timeout)
            except KafkaError as e:
                raise BrokerError(f"closing the Kafka producer failed: {_one_line(e)}") from e

    def __enter__(self) -> SadaProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        # Already failing: close without masking the original error.
        with contextlib.suppress(SadaError):
            self.close()

    # -- building and sending ---------------------------------------------------

    def submit(
        self,
        *,
        unit_id: str,
        title: str,
        body: str,
        author_id: str,
        kind: str = "suggestion",
        author_role: str = "student",
        channel: str = "web",
        language: str = "fa",
        anonymous: bool = False,
        submission_id: str | None = None,
        tracking_code: str | None = None,
        time: datetime | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """Create a submission; returns the event sent (its ``data`` holds the tracking code)."""
        data: dict[str, Any] = {
            "kind": kind,
            "title": title,
            "body": body,
            "language": language,
            "channel": channel,
            "unit_id": unit_id,
            "author": {"id": author_id, "role": author_role},
            "anonymous": anonymous,
        }
        if submission_id is not None:
            data["submission_id"] = submission_id
        if tracking_code is not None:
            data["tracking_code"] = tracking_code
        return self._build_and_send(SUBMISSION_CREATED, data, time, event_id)

    def withdraw(
        self,
        submission_id: str,
        *,
        reason: str | None = None,
        time: datetime | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """The author withdraws a submission."""
        data: dict[str, Any] = {"submission_id": submission_id}
        if reason is not None:
            data["reason"] = reason
        return self._build_and_send(SUBMISSION_WITHDRAWN, data, time, event_id)

    def vote(
        self,
        submission_id: str,
        voter_id: str,
        stance: str = "support",
        *,
        time: datetime | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """Cast (or change) a vote: ``stance`` is ``support`` or ``oppose``."""
        data = {"submission_id": submission_id, "voter_id": voter_id, "stance": stance}
        return self._build_and_send(VOTE_CAST, data, time, event_id)

    def retract(
        self,
        submission_id: str,
        voter_id: str,
        *,
        time: datetime | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """Retract a voter's vote."""
        data = {"submission_id": submission_id, "voter_id": voter_id}
        return self._build_and_send(VOTE_RETRACTED, data, time, event_id)

    def follow(
        self,
        submission_id: str,
        follower_id: str,
        *,
        on: bool = True,
        time: datetime | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """Follow a submission (``on=False``: stop following it, support vote or not)."""
        data = {"submission_id": submission_id, "follower_id": follower_id}
        type_ = SUBMISSION_FOLLOWED if on else SUBMISSION_UNFOLLOWED
        return self._build_and_send(type_, data, time, event_id)

    def respond(
        self,
        submission_id: str,
        unit_id: str,
        kind: str,
        body: str,
        *,
        referred_to_unit_id: str | None = None,
        response_id: str | None = None,
        time: datetime | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """A unit responds: acknowledgement, answer, referral, resolution or rejection."""
        data: dict[str, Any] = {
            "submission_id": submission_id,
            "response_id": response_id or str(uuid.uuid4()),
            "unit_id": unit_id,
            "kind": kind,
            "body": body,
        }
        if referred_to_unit_id is not None:
            data["referred_to_unit_id"] = referred_to_unit_id
        return self._build_and_send(RESPONSE_POSTED, data, time, event_id)

    def rate(
        self,
        submission_id: str,
        rating: int,
        *,
        comment: str | None = None,
        time: datetime | None = None,
        event_id: str | None = None,
    ) -> dict[str, Any]:
        """The author rates the handling of a closed submission, 1 to 5."""
        data: dict[str, Any] = {"submission_id": submission_id, "rating": rating}
        if comment is not None:
            data["comment"] = comment
        return self._build_and_send(SATISFACTION_RATED, data, time, event_id)

    # -- internals --------------------------------------------------------------

    def _build_and_send(
        self,
        type_: str,
        data: Mapping[str, Any],
        time: datetime | None,
        event_id: str | None,
    ) -> dict[str, Any]:
        if self.source is None:
            raise SadaError("SadaProducer needs a source (SadaProducer(..., source=...))")
        event = build_event(type_, data, source=self.source, event_id=event_id, time=time)
        return self._send(event)

    def _send(self, event: Mapping[str, Any]) -> dict[str, Any]:
        contracts.validate_event(event)
        if self.pseudonymizer is not None:
            event = self.pseudonymizer.apply(event)
        topic, key, value = encode_event(event)
        if topic not in topics.INPUT_TOPICS:
            raise EventRejectedError(
                Reason.FORBIDDEN,
                f"type: {event['type']} is written by the pipeline only, not by integrators",
            )
        if len(value) > self.max_event_bytes:
            raise EventRejectedError(
                Reason.TOO_LARGE,
                f"event: {len(value)} bytes, more than the limit of {self.max_event_bytes}",
            )
        self._produce(topic, key, value)
        return dict(event)

    def _produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        try:
            future = self._producer.send(topic, value=value, key=key)
        except (KafkaError, ValueError, TypeError) as e:
            raise BrokerError(f"cannot send to {topic}: {_one_line(e)}") from e
        future.add_errback(self._on_failure)

    def _on_failure(self, error: BaseException) -> None:
        # Runs on the producer's sender thread.
        with self._lock:
            self._failures[type(error).__name__] += 1
            if not self._first_failure:
                self._first_failure = _one_line(error)


# Event ids must be unique, not secret: a generator seeded from the operating
# system once (and again in a forked child) spares a system call per event,
# which costs a GIL hand-over while kafka-python's sender thread is busy.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)


def _uuid(rng: random.Random | None) -> str:
    return str(uuid.UUID(int=(rng or _ids).getrandbits(128), version=4))


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:299] + "…"

"""The HTTP gateway: ``POST /api/v1/events`` for integrators that do not speak Kafka.

A request carries one CloudEvent (a JSON object), a JSON array of them, or
NDJSON (``Content-Type: application/x-ndjson``, or recognised by its lines),
and ``Authorization: Bearer <key>``. The key names an integrator of the
config by its SHA-256; the key itself is never stored or logged.

What a request goes through, in order:

1. authentication: no key, or a key of no integrator, is 401;
2. rate: each integrator has a token bucket of ``rate_per_second`` events per
   second holding at most twice that. A request is admitted while the bucket
   holds at least one token and is charged one token per event it carries; a
   large batch may take the bucket into debt, which the integrator's next
   requests wait out. So the long-run rate is bounded, yet a full batch is
   never refused for its size alone. An empty bucket is 429 with
   ``Retry-After``;
3. size: a body over 1 MiB is 413; more than 500 events is 400
   ``batch_too_large``; a body that is neither JSON nor NDJSON is 400
   ``malformed_body``;
4. scope: every event's ``source`` must lie under one of the integrator's
   source prefixes (by whole path segments: ``/integrations/telegram`` does
   not cover ``/integrations/telegram-copy``) and its ``type`` be one of its
   types, never ``sada.submission.escalated``, and the ``source`` must be in
   normal form (no dot segments, no encoded separators: see
   :mod:`~sada.producers.sources`), so that the scope checked is the source
   every reader resolves; otherwise the whole request is 403 and nothing is
   published;
5. each event is validated as ingress validates it (schema, then unit ids
   known to the config). A missing ``datacontenttype`` or ``dataschema`` is
   filled; everything else must be given. Valid events are pseudonymised
   (when ``SADA_PSEUDONYM_KEY`` is set) and published to their input topic;
   invalid ones are not published. The answer is 202 with one result per
   event, even if all were rejected. A Kafka failure is 503: retrying the
   request is safe, because ingress absorbs an event sent twice (same
   ``source`` and ``id``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError
from aiokafka import AIOKafkaProducer

from sada.infra import contracts, topics
from sada.infra.settings import Settings
from sada.pipeline.domain.config import Config, Integrator
from sada.pipeline.domain.errors import EventRejectedError
from sada.pipeline.domain.ingress import check_not_ahead, check_references
from sada.pipeline.domain.reasons import Reason
from sada.producers.privacy import Pseudonymizer
from sada.producers.sdk import encode_event
from sada.producers.sources import source_problem

log = logging.getLogger(__name__)

PATH = "/api/v1/events"
MAX_BODY_BYTES = 1024 * 1024
MAX_BATCH = 500
BROKER_TIMEOUT_SECONDS = 15.0
NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)

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
            problems.append(f"source {_short(source)} is not in normal form: {abnormal}")
        elif isinstance(source, str) and not source_allowed(source, integrator.sources):
            problems.append(
                f"source {_short(source)} is not under the sources of integrator "
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
                    "id": _event_id(event),
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


# -- checking one event ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checked:
    topic: str
    key: bytes
    value: bytes


class EventChecker:
    """Validates one event as ingress does, completes and pseudonymises it, and encodes it."""

    def __init__(
        self,
        units: Mapping[str, object],
        max_event_bytes: int,
        pseudonymizer: Pseudonymizer | None,
        max_future_seconds: float = 300.0,
    ) -> None:
        self.units = frozenset(units)
        self.max_event_bytes = max_event_bytes
        self.pseudonymizer = pseudonymizer
        self.max_future = timedelta(seconds=max_future_seconds)

    def check(self, item: BodyItem) -> Checked:
        """The encoded event; raises :class:`EventRejectedError` if it may not be published."""
        if item.error is not None:
            raise item.error
        event = item.value
        if isinstance(event, dict):
            self._check_size(orjson.dumps(event))
            event = dict(event)
            event.setdefault("datacontenttype", "application/json")
            type_ = event.get("type")
            if (
                "dataschema" not in event
                and isinstance(type_, str)
                and type_ in contracts.EVENT_TYPES
            ):
                event["dataschema"] = contracts.schema_id(type_)
        contracts.validate_event(event)
        check_references(event, self.units)
        check_not_ahead(event, datetime.now(UTC), self.max_future)  # the same rule as ingress
        if self.pseudonymizer is not None:
            event = self.pseudonymizer.apply(event)
        topic, key, value = encode_event(event)
        self._check_size(value)
        return Checked(topic, key, value)

    def _check_size(self, value: bytes) -> None:
        if len(value) > self.max_event_bytes:
            raise EventRejectedError(
                Reason.TOO_LARGE,
                f"event: {len(value)} bytes, more than the limit of {self.max_event_bytes}",
            )


# -- the route ---------------------------------------------------------------------


class BrokerUnavailableError(Exception):
    """Kafka did not take the events in time."""


class Gateway:
    """The state behind ``POST /api/v1/events``: keys, buckets and one Kafka producer."""

    def __init__(self, settings: Settings, config: Config, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.keys = KeyRing(config.integrators)
        key = settings.pseudonym_key
        self.checker = EventChecker(
            config.units,
            settings.max_event_bytes,
            Pseudonymizer(key.encode("utf-8")) if key else None,
            settings.max_future_seconds,
        )
        self._max_request_bytes = max(1024 * 1024, settings.max_event_bytes + 4096)
        self._buckets: dict[str, TokenBucket] = {}
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    def install(self, app: web.Application) -> None:
        app.router.add_post(PATH, self.handle)
        app.on_cleanup.append(self._on_cleanup)

    async def handle(self, request: web.Request) -> web.Response:
        key = bearer_key(request.headers.get("Authorization"))
        if key is None:
            return _unauthorized("no bearer key: send Authorization: Bearer <key>", invalid=False)
        integrator = self.keys.find(key)
        if integrator is None:
            return _unauthorized("the bearer key belongs to no integrator", invalid=True)

        bucket = self._bucket(integrator)
        wait = bucket.wait(time.monotonic())
        if wait > 0:
            retry = max(1, math.ceil(wait))
            response = _json(
                429,
                {
                    "error": str(Reason.RATE_LIMITED),
                    "message": f"integrator {integrator.id!r} is over its rate of "
                    f"{integrator.rate_per_second:g} events per second; retry in {retry} s",
                    "retry_after": retry,
                },
            )
            response.headers["Retry-After"] = str(retry)
            return response

        try:
            body = await _read_body(request)
        except (web.RequestPayloadError, ClientPayloadError, HttpProcessingError) as e:
            bucket.charge(1, time.monotonic())
            return _error(400, "malformed_body", f"the body could not be read: {_one_line(e)}")
        if body is None:
            bucket.charge(1, time.monotonic())
            return _error(413, "body_too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")
        try:
            items = parse_body(
                body,
                ndjson=request.content_type in NDJSON_TYPES,
                max_event_bytes=self.checker.max_event_bytes,
            )
        except MalformedBodyError as e:
            bucket.charge(1, time.monotonic())
            return _error(400, "malformed_body", str(e))
        if len(items) > MAX_BATCH:
            bucket.charge(1, time.monotonic())
            return _error(
                400,
                "batch_too_large",
                f"{len(items)} events in one request; at most {MAX_BATCH} are allowed",
            )
        bucket.charge(len(items), time.monotonic())

        forbidden = scope_violations(integrator, items)
        if forbidden:
            log.info("integrator %s: %d event(s) out of scope", integrator.id, len(forbidden))
            return _json(
                403,
                {
                    "error": str(Reason.FORBIDDEN),
                    "message": f"{len(forbidden)} event(s) outside the scope of integrator "
                    f"{integrator.id!r}; nothing was published",
                    "reasons": forbidden,
                },
            )

        results: list[dict[str, Any]] = []
        to_send: list[Checked] = []
        for item in items:
            result: dict[str, Any] = {"index": item.index, "id": _event_id(item.value)}
            if item.line is not None:
                result["line"] = item.line
            try:
                to_send.append(self.checker.check(item))
            except EventRejectedError as e:
                result.update(status="rejected", reason=str(e.reason), detail=e.detail)
            else:
                result["status"] = "accepted"
            results.append(result)

        if to_send:
            try:
                await self._publish(to_send)
            except BrokerUnavailableError as e:
                log.warning("integrator %s: publishing failed: %s", integrator.id, e)
                return _error(
                    503,
                    "broker_unavailable",
                    f"Kafka did not take the events ({e}); some may have been published. "
                    "Retry the request: events already published are absorbed as duplicates",
                )
        accepted = len(to_send)
        log.info(
            "integrator %s: %d accepted, %d rejected",
            integrator.id,
            accepted,
            len(items) - accepted,
        )
        return _json(
            202, {"accepted": accepted, "rejected": len(items) - accepted, "results": results}
        )

    def _bucket(self, integrator: Integrator) -> TokenBucket:
        bucket = self._buckets.get(integrator.id)
        if bucket is None:
            rate = integrator.rate_per_second
            bucket = TokenBucket(rate, 2 * rate, time.monotonic())
            self._buckets[integrator.id] = bucket
        return bucket

    async def _publish(self, events: Sequence[Checked]) -> None:
        try:
            producer = await self._started_producer()
            async with asyncio.timeout(BROKER_TIMEOUT_SECONDS):
                futures = [await producer.send(e.topic, e.value, key=e.key) for e in events]
                await asyncio.gather(*futures)
        except BrokerUnavailableError:
            raise
        except TimeoutError as e:
            raise BrokerUnavailableError(
                f"no acknowledgement within {BROKER_TIMEOUT_SECONDS:g} s"
            ) from e
        except Exception as e:  # aiokafka raises KafkaError, OSError and others
            raise BrokerUnavailableError(_one_line(e)) from e

    async def _started_producer(self) -> AIOKafkaProducer:
        async with self._starting:
            if self._producer is not None:
                return self._producer
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                client_id="sada-gateway",
                acks="all",
                linger_ms=5,
                request_timeout_ms=int(BROKER_TIMEOUT_SECONDS * 1000),
                max_request_size=self._max_request_bytes,
            )
            try:
                async with asyncio.timeout(BROKER_TIMEOUT_SECONDS):
                    await producer.start()
            except Exception as e:
                await _stop_quietly(producer)
                raise BrokerUnavailableError(
                    f"cannot connect to Kafka at {self.bootstrap}: {_one_line(e)}"
                ) from e
            self._producer = producer
            return producer

    async def _on_cleanup(self, _app: web.Application) -> None:
        async with self._starting:
            producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_quietly(producer)


def routes(settings: Settings, config: Config, bootstrap: str) -> Callable[[web.Application], None]:
    """The installer of ``POST /api/v1/events`` for :func:`sada.infra.http.build_app`.

    The Kafka producer starts with the first request that has something to
    publish, on the application's event loop, and stops on the application's
    cleanup.
    """
    return Gateway(settings, config, bootstrap).install


# -- helpers -----------------------------------------------------------------------


async def _read_body(request: web.Request) -> bytes | None:
    """The body, or None when it is larger than :data:`MAX_BODY_BYTES`."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return None
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)


async def _stop_quietly(producer: AIOKafkaProducer) -> None:
    try:
        await producer.stop()
    except Exception as e:  # stopping a producer that never started may fail; nothing to save
        log.debug("stopping the gateway's Kafka producer: %s", e)


def _event_id(value: object) -> str | None:
    if isinstance(value, dict):
        event_id = value.get("id")
        if isinstance(event_id, str):
            return event_id
    return None


def _short(value: object) -> str:
    if isinstance(value, str) and len(value) > _SHOWN_CHARS:
        shown = repr(value[:_SHOWN_CHARS])
        return shown[:-1] + "…" + shown[-1]
    return repr(value)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:299] + "…"


def _json(status: int, body: Mapping[str, Any]) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _error(status: int, code: str, message: str) -> web.Response:
    return _json(status, {"error": code, "message": message})


def _unauthorized(message: str, *, invalid: bool) -> web.Response:
    response = _error(401, "unauthorized", message)
    challenge = 'Bearer realm="sada"'
    if invalid:
        challenge += ', error="invalid_token"'
    response.headers["WWW-Authenticate"] = challenge
    return response

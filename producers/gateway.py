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
   invalid ones are not published;
6. each valid event is judged (:mod:`~sada.producers.outcomes`): ``duplicate``
   (published before, or earlier in the request: not published again),
   ``pending`` (published, but it waits for its submission, so its fate is
   decided later; ``GET /api/v1/events/{id}?source=…`` tells it) or
   ``accepted``. The answer is 202 with one result per event, even if all were
   rejected, and the count of each result. A Kafka failure is 503: retrying
   the request is safe, because ingress absorbs an event sent twice (same
   ``source`` and ``id``).
"""

from __future__ import annotations

import asyncio
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

from sada.infra import contracts
from sada.infra.gateway_metrics import GatewayMetrics
from sada.infra.settings import Settings
from sada.pipeline.domain.config import Config, Integrator
from sada.pipeline.domain.errors import EventRejectedError
from sada.pipeline.domain.ingress import check_not_ahead, check_references
from sada.pipeline.domain.reasons import Reason
from sada.pipeline.domain.vocabulary import GATEWAY_RESULTS
from sada.producers.outcomes import Candidate, Lookup, Outcomes
from sada.producers.privacy import Pseudonymizer
from sada.producers.requests import (
    BodyItem,
    KeyRing,
    MalformedBodyError,
    TokenBucket,
    bearer_key,
    event_id_of,
    parse_body,
    scope_violations,
)
from sada.producers.sdk import encode_event

log = logging.getLogger(__name__)

PATH = "/api/v1/events"
MAX_BODY_BYTES = 1024 * 1024
MAX_BATCH = 500
BROKER_TIMEOUT_SECONDS = 15.0
NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)


# -- checking one event ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checked:
    topic: str
    key: bytes
    value: bytes
    candidate: Candidate


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
        candidate = Candidate(
            event["source"], event["id"], event["type"], event["data"]["submission_id"]
        )
        return Checked(topic, key, value, candidate)

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
    """The state behind ``POST /api/v1/events``: keys, buckets, what was published, and
    one Kafka producer."""

    def __init__(
        self,
        settings: Settings,
        config: Config,
        bootstrap: str,
        lookup: Lookup | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.outcomes = Outcomes(lookup)
        self.metrics = metrics
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
        valid: list[tuple[dict[str, Any], Checked]] = []
        for item in items:
            result: dict[str, Any] = {"index": item.index, "id": event_id_of(item.value)}
            if item.line is not None:
                result["line"] = item.line
            try:
                valid.append((result, self.checker.check(item)))
            except EventRejectedError as e:
                result.update(status="rejected", reason=str(e.reason), detail=e.detail)
            results.append(result)
        verdicts = await self.outcomes.judge([checked.candidate for _, checked in valid])
        to_send: list[Checked] = []
        for (result, checked), verdict in zip(valid, verdicts, strict=True):
            result["status"] = verdict.result
            if verdict.detail is not None:
                result["detail"] = verdict.detail
            if verdict.result != "duplicate":
                to_send.append(checked)

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
            self.outcomes.remember(checked.candidate for checked in to_send)
        counts: dict[str, int] = dict.fromkeys(GATEWAY_RESULTS, 0)
        for result in results:
            counts[result["status"]] += 1
        if self.metrics is not None:
            for r, n in counts.items():
                self.metrics.answered(r, n)
        log.info(
            "integrator %s: %s",
            integrator.id,
            ", ".join(f"{n} {r}" for r, n in counts.items()),
        )
        return _json(202, {**counts, "results": results})

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


def routes(
    settings: Settings,
    config: Config,
    bootstrap: str,
    lookup: Lookup | None = None,
    metrics: GatewayMetrics | None = None,
) -> Callable[[web.Application], None]:
    """The installer of ``POST /api/v1/events`` for :func:`sada.infra.http.build_app`.

    ``lookup`` is the store read to tell duplicates and pending events (without
    it only what this gateway published counts: see :mod:`~sada.producers.outcomes`);
    ``metrics`` counts each event's result. The Kafka producer starts with the
    first request that has something to publish, on the application's event
    loop, and stops on the application's cleanup.
    """
    return Gateway(settings, config, bootstrap, lookup, metrics).install


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

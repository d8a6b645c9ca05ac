"""Building Sada CloudEvents: fills what an integrator may leave out, then validates.

``build_event`` completes an event (``id``, ``time``, ``specversion``,
``datacontenttype``, ``dataschema``, ``subject``, and for a new submission its
``submission_id`` and ``tracking_code``) and validates it with the same
validators as ingress, so an SDK user learns of a bad event before sending it.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sada.infra import contracts
from sada.pipeline.domain.model import SUBMISSION_CREATED, format_time
from sada.pipeline.domain.tracking import new_tracking_code


def build_event(
    type_: str,
    data: Mapping[str, Any],
    *,
    source: str,
    event_id: str | None = None,
    time: datetime | None = None,
    rng: random.Random | None = None,
    validate: bool = True,
) -> dict[str, Any]:
    """A complete, validated CloudEvent of ``type_`` carrying ``data``.

    ``rng`` makes generated ids and tracking codes repeatable (simulations);
    without it they come from the operating system's randomness.
    """
    body = dict(data)
    if type_ == SUBMISSION_CREATED:
        body.setdefault("submission_id", _uuid(rng))
        body.setdefault("tracking_code", new_tracking_code(rng))
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id or _uuid(rng),
        "source": source,
        "type": type_,
        "time": format_time(time or datetime.now(UTC)),
        "subject": body.get("submission_id"),
        "datacontenttype": "application/json",
        "dataschema": contracts.schema_id(type_),
        "data": body,
    }
    if validate:
        contracts.validate_event(event)
    return event


def topic_for(event: Mapping[str, Any]) -> str:
    """The input topic an event of this type is published to."""
    return contracts.TOPIC_OF_TYPE[str(event["type"])]


def _uuid(rng: random.Random | None) -> str:
    if rng is None:
        return str(uuid.uuid4())
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))

"""CloudEvents the pipeline writes: ``sada.submission.escalated`` on ``sada.escalations``,
``sada.notification.*`` on ``sada.notifications`` (and to webhooks)."""

from __future__ import annotations

from typing import Any

from sada.pipeline.domain.model import SUBMISSION_ESCALATED, Escalated, format_time
from sada.pipeline.domain.notify import Notification

PIPELINE_SOURCE = "/sada/pipeline"
ESCALATED_SCHEMA = "https://sada.example/schemas/sada.submission.escalated/v1.json"


def escalation_event(esc: Escalated) -> dict[str, Any]:
    data: dict[str, Any] = {
        "submission_id": esc.submission_id,
        "from_level": esc.from_level,
        "to_level": esc.to_level,
        "from_unit_id": esc.from_unit_id,
        "to_unit_id": esc.to_unit_id,
        "reason": esc.reason,
        "support": esc.support,
    }
    if esc.deadline is not None:
        data["deadline"] = format_time(esc.deadline)
    return {
        "specversion": "1.0",
        "id": esc.event_id,
        "source": PIPELINE_SOURCE,
        "type": SUBMISSION_ESCALATED,
        "time": format_time(esc.time),
        "subject": esc.submission_id,
        "datacontenttype": "application/json",
        "dataschema": ESCALATED_SCHEMA,
        "data": data,
    }


def notification_schema(type_: str) -> str:
    return f"https://sada.example/schemas/{type_}/v1.json"


def notification_event(n: Notification) -> dict[str, Any]:
    """The CloudEvent of a notification: on ``sada.notifications`` and a webhook's body."""
    data: dict[str, Any] = {
        "recipient": n.recipient,
        "submission_id": n.submission_id,
        "decision_id": n.decision_id,
        **n.data,
    }
    if n.source is not None:
        data["via"] = n.source
    return {
        "specversion": "1.0",
        "id": n.id,
        "source": PIPELINE_SOURCE,
        "type": n.type,
        "time": format_time(n.at),
        "subject": n.submission_id,
        "datacontenttype": "application/json",
        "dataschema": notification_schema(n.type),
        "data": data,
    }

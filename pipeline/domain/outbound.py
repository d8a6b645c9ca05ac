"""CloudEvents the pipeline writes: ``sada.submission.escalated`` on ``sada.escalations``."""

from __future__ import annotations

from typing import Any

from sada.pipeline.domain.model import SUBMISSION_ESCALATED, Escalated, format_time

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

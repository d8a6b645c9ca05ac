"""The closed sets a metric label value is clamped to, so that no input can add a series.

Each set is the vocabulary's (the event schemas'), or a bound of Sada's own
(levels, stages, topics); a value outside its set is exported as
:data:`UNKNOWN`. Units, stages and topics are clamped by
:class:`~sada.infra.metrics.Metrics`, which is told the configured ones.
"""

from __future__ import annotations

from sada.pipeline.domain import vocabulary
from sada.pipeline.domain.reasons import Reason

UNKNOWN = "unknown"

# The closed sets of label values, as the vocabulary (the schemas) defines them.
EVENT_TYPES: frozenset[str] = frozenset(vocabulary.EVENT_TYPES)
CHANNELS: frozenset[str] = frozenset(vocabulary.CHANNELS)
KINDS: frozenset[str] = frozenset(vocabulary.SUBMISSION_KINDS)
REJECTION_REASONS: frozenset[str] = frozenset(vocabulary.REJECTION_REASONS)
ESCALATION_REASONS: frozenset[str] = frozenset(vocabulary.ESCALATION_REASONS)
STATUSES: frozenset[str] = frozenset(vocabulary.SLA_STATUSES)
GATEWAY_RESULTS: frozenset[str] = frozenset(vocabulary.GATEWAY_RESULTS)
# Levels 0..5 are exported as themselves; 6 and above share one series.
LEVEL_CAP = 6
LEVEL_CAPPED = f"{LEVEL_CAP}+"
LEVELS: frozenset[str] = frozenset({*(str(i) for i in range(LEVEL_CAP)), LEVEL_CAPPED})
DEFAULT_STAGES: frozenset[str] = frozenset(
    {"ingress", "projector", "notary", "gateway", "read_model", "archive", "notifications"}
)
DEFAULT_TOPICS: frozenset[str] = frozenset(
    {
        "sada.submissions",
        "sada.votes",
        "sada.responses",
        "sada.escalations",
        "sada.dlq",
        "sada.log",
        "sada.checkpoints",
    }
)


def clamp(value: object, allowed: frozenset[str]) -> str:
    text = str(value.value if isinstance(value, Reason) else value)
    return text if text in allowed else UNKNOWN


def clamp_type(type_: str | None) -> str:
    return clamp(type_, EVENT_TYPES)


def clamp_channel(channel: str | None) -> str:
    return clamp(channel, CHANNELS)


def clamp_kind(kind: str | None) -> str:
    return clamp(kind, KINDS)


def clamp_rejection_reason(reason: Reason | str | None) -> str:
    return clamp(reason, REJECTION_REASONS)


def clamp_escalation_reason(reason: str | None) -> str:
    return clamp(reason, ESCALATION_REASONS)


def clamp_status(status: str | None) -> str:
    return clamp(status, STATUSES)


def clamp_level(level: int | None) -> str:
    # bool is an int subclass; a level is never a truth value.
    if not isinstance(level, int) or isinstance(level, bool) or level < 0:
        return UNKNOWN
    return str(level) if level < LEVEL_CAP else LEVEL_CAPPED

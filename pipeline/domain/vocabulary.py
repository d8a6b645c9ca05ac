"""Sada's closed sets of names, each defined once.

Where an event schema has the set as an ``enum`` (event types, submission
kinds, channels, stances, response kinds, author roles, escalation reasons),
it is read from that schema, so adding a value is one schema edit. The sets
no schema carries (SLA statuses, rejection reasons) are defined here and in
:mod:`~sada.pipeline.domain.reasons`.

Every set read from a schema is a tuple in sorted order, so whatever lists or
counts by it (configuration checks, dashboards, metric labels) sees one stable
order, whichever order the schema happens to list its values in.

The ``Literal`` aliases are the same sets for the type checker, which cannot
read a schema; importing this module fails if one of them disagrees with its
schema.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any, Literal, get_args

from sada.pipeline.domain.errors import SadaError
from sada.pipeline.domain.reasons import Reason

_SCHEMAS = resources.files("sada.schemas")


def _schema(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((_SCHEMAS / name).read_text(encoding="utf-8"))
    return document


def _enum(document: dict[str, Any], *path: str) -> tuple[str, ...]:
    """The sorted values of the ``enum`` at ``path`` in ``document``."""
    node: Any = document
    for key in path:
        node = node[key]
    values = node["enum"]
    if not all(isinstance(v, str) for v in values) or len(set(values)) != len(values):
        raise SadaError(f"{document['$id']} {'/'.join(path)}: expected distinct strings")
    return tuple(sorted(values))


_COMMON = _schema("sada.common.v1.json")

EVENT_TYPES: tuple[str, ...] = _enum(_schema("cloudevent.v1.json"), "properties", "type")
SUBMISSION_KINDS: tuple[str, ...] = _enum(_COMMON, "$defs", "kind")
CHANNELS: tuple[str, ...] = _enum(_COMMON, "$defs", "channel")
AUTHOR_ROLES: tuple[str, ...] = _enum(_COMMON, "$defs", "role")
STANCES: tuple[str, ...] = _enum(_schema("sada.vote.cast.v1.json"), "properties", "stance")
RESPONSE_KINDS: tuple[str, ...] = _enum(
    _schema("sada.response.posted.v1.json"), "properties", "kind"
)
ESCALATION_REASONS: tuple[str, ...] = _enum(
    _schema("sada.submission.escalated.v1.json"), "properties", "reason"
)

# Where an open submission stands against its SLA clocks (no event carries it),
# from best to worst: the order a reader scans them in.
SlaStatus = Literal["on_time", "at_risk", "overdue"]
SLA_STATUSES: tuple[SlaStatus, ...] = get_args(SlaStatus)
REJECTION_REASONS: tuple[str, ...] = tuple(sorted(r.value for r in Reason))
# What the HTTP gateway answers for one event of a request (its answer's counts and
# its metric's label): published and taken, already published, published with its
# fate decided later (it waits for its submission), or refused with a reason.
GatewayResult = Literal["accepted", "duplicate", "pending", "rejected"]
GATEWAY_RESULTS: tuple[GatewayResult, ...] = get_args(GatewayResult)

# Response kinds that close a submission.
CLOSING_RESPONSES: frozenset[str] = frozenset({"answer", "resolution", "rejection"})

# The event types by name, for the modules that handle one type at a time.
SUBMISSION_CREATED = "sada.submission.created"
SUBMISSION_WITHDRAWN = "sada.submission.withdrawn"
VOTE_CAST = "sada.vote.cast"
VOTE_RETRACTED = "sada.vote.retracted"
RESPONSE_POSTED = "sada.response.posted"
SATISFACTION_RATED = "sada.satisfaction.rated"
SUBMISSION_ESCALATED = "sada.submission.escalated"
SUBMISSION_FOLLOWED = "sada.submission.followed"
SUBMISSION_UNFOLLOWED = "sada.submission.unfollowed"

Stance = Literal["support", "oppose"]
EscalationReason = Literal["support_threshold", "first_response_overdue", "resolution_overdue"]


def _agree(name: str, spelled: set[str] | frozenset[str], read: tuple[str, ...]) -> None:
    if set(spelled) != set(read):
        raise SadaError(f"{name} is {sorted(spelled)} here but {list(read)} in the schemas")


_agree("Stance", set(get_args(Stance)), STANCES)
_agree("EscalationReason", set(get_args(EscalationReason)), ESCALATION_REASONS)
_agree(
    "the event type names",
    {
        SUBMISSION_CREATED,
        SUBMISSION_WITHDRAWN,
        VOTE_CAST,
        VOTE_RETRACTED,
        RESPONSE_POSTED,
        SATISFACTION_RATED,
        SUBMISSION_ESCALATED,
        SUBMISSION_FOLLOWED,
        SUBMISSION_UNFOLLOWED,
    },
    EVENT_TYPES,
)
if not set(RESPONSE_KINDS) >= CLOSING_RESPONSES:
    raise SadaError(f"closing responses {sorted(CLOSING_RESPONSES)} are not all response kinds")

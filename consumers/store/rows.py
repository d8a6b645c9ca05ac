"""A projector batch in stored form: the column order of each table's rows, and the rows.

Rows are tuples of values as the database stores them (instants as text), so
the bulk statements of :mod:`.statements` can hand them to the driver as they
are. They are built before the write transaction opens, keeping it short.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import Table

from sada.consumers.tables import Instant, escalations, submissions
from sada.pipeline.domain.model import Escalated, SubmissionState, format_time
from sada.pipeline.domain.ports import BatchWrite

STATE_FIELDS = tuple(f.name for f in dataclasses.fields(SubmissionState))
ESCALATION_FIELDS = tuple(f.name for f in dataclasses.fields(Escalated))

EVENT_COLUMNS = (
    "key",
    "partition",
    "offset",
    "submission_id",
    "type",
    "time",
    "at",
    "late",
    "effective",
    "note",
)
SUBMISSION_COLUMNS = (*STATE_FIELDS, "partition")
# A submission's identity never changes once created.
SUBMISSION_IDENTITY = ("tracking_code", "kind", "channel", "created_at", "partition")
RESPONSE_COLUMNS = (
    "key",
    "response_id",
    "submission_id",
    "unit_id",
    "kind",
    "referred_to_unit_id",
    "at",
    "effective",
)
ESCALATION_COLUMNS = (*ESCALATION_FIELDS, "published")
ARCHIVE_ROW = ("partition", "offset", "record", "prev_hash", "hash")
ARCHIVE_RECORD = ("partition", "offset", "record")

# Fields whose values recur across submissions (strings and instants; not numbers,
# where 0 == False would mix them up).
STATE_SHARED_POSITIONS = tuple(
    i
    for i, n in enumerate(STATE_FIELDS)
    if n in ("kind", "channel", "status", "unit_id") or isinstance(submissions.c[n].type, Instant)
)


def _instant_positions(fields: tuple[str, ...], table: Table) -> tuple[int, ...]:
    return tuple(i for i, n in enumerate(fields) if isinstance(table.c[n].type, Instant))


_STATE_VALUES = attrgetter(*STATE_FIELDS)
_STATE_INSTANT_POSITIONS = _instant_positions(STATE_FIELDS, submissions)
_ESCALATION_VALUES = attrgetter(*ESCALATION_FIELDS)
_ESCALATION_INSTANT_POSITIONS = _instant_positions(ESCALATION_FIELDS, escalations)


def time_text(value: datetime | None) -> str | None:
    """An instant, or None, in its stored spelling (the one the API shows as well)."""
    return None if value is None else format_time(value)


def _instants(values: tuple[Any, ...], positions: tuple[int, ...]) -> list[Any]:
    """``values`` with the instants at ``positions`` in stored form."""
    row = list(values)
    for i in positions:
        value = row[i]
        if value is not None:
            row[i] = format_time(value)
    return row


def state_row(state: SubmissionState, partition: int) -> tuple[Any, ...]:
    """A state as a row of ``submissions``, in :data:`SUBMISSION_COLUMNS` order."""
    return (*_instants(_STATE_VALUES(state), _STATE_INSTANT_POSITIONS), partition)


@dataclasses.dataclass(slots=True)
class BatchRows:
    events: list[tuple[Any, ...]]
    states: list[tuple[Any, ...]]
    votes_set: list[tuple[Any, ...]]
    votes_unset: list[tuple[Any, ...]]
    responses: list[tuple[Any, ...]]
    escalations: list[tuple[Any, ...]]


def batch_rows(batch: BatchWrite, states: bool = True) -> BatchRows:
    """A batch's rows; of several changes to one state or stance, the last."""
    p = batch.partition
    text = format_time
    latest = {s.submission_id: s for s in batch.states} if states else {}
    state_rows = [state_row(s, p) for s in latest.values()]
    latest_stances = {(sid, voter): (stance, at) for sid, voter, stance, at in batch.stances}
    votes_set = []
    votes_unset = []
    for (sid, voter), (stance, at) in latest_stances.items():
        if stance is None:
            votes_unset.append((sid, voter))
        else:
            votes_set.append((sid, voter, stance, text(at)))
    events_ = [
        (
            a.key,
            p,
            a.offset,
            a.submission_id,
            a.type,
            text(a.time),
            text(a.at),
            a.late,
            a.effective,
            a.note,
        )
        for a in batch.applied
    ]
    responses_ = [
        (
            r.key,
            r.response_id,
            r.submission_id,
            r.unit_id,
            r.kind,
            r.referred_to_unit_id,
            text(at),
            effective,
        )
        for r, at, effective in batch.responses
    ]
    escalations_ = [
        (*_instants(_ESCALATION_VALUES(e), _ESCALATION_INSTANT_POSITIONS), False)
        for e in batch.escalations
    ]
    return BatchRows(
        events=events_,
        states=state_rows,
        votes_set=votes_set,
        votes_unset=votes_unset,
        responses=responses_,
        escalations=escalations_,
    )

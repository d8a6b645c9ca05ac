"""The work queue's query: open and closed submissions, filtered, most urgent first, in pages.

:class:`QueueQuery` is a query already checked and in stored terms (unit ids,
instants, search tokens); :meth:`WorkQueue.work_queue` runs it. What an SLA
status means is the domain's rule (:mod:`sada.pipeline.domain.sla`); here it
is evaluated in SQL the same way the operations view counts it: overdue when
a flag is set or a running deadline is before the clock, at risk when a
running clock started at or before its kind's cutoff (from
:func:`~sada.pipeline.domain.sla.at_risk_cutoff`), on time otherwise.

Order: by the nearest running deadline, earliest first (a deadline further in
the past is more business time overdue: business time never runs backwards),
submissions without a deadline last, then by submission id. Pagination is by
keyset on that pair, so a page costs the same wherever it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    case,
    column,
    false,
    literal,
    or_,
    select,
    table,
    true,
    type_coerce,
)

from sada.consumers.store.base import StoreBase
from sada.consumers.store.texts import SEARCH_PREFIX, submission_texts
from sada.consumers.tables import submissions
from sada.pipeline.domain.sla import SlaStatus

# Sorts after every instant in stored form: submissions without a deadline come last.
NO_DEADLINE: Final = "~"
MAX_LIMIT: Final = 1000

Cutoffs = dict[str, tuple[datetime | None, datetime | None]]


@dataclass(frozen=True, slots=True)
class QueueQuery:
    """A checked work-queue query. ``None`` (or empty) means "any"."""

    units: tuple[str, ...] | None = None
    ids: tuple[str, ...] | None = None  # submission ids
    status: str | None = None
    kinds: tuple[str, ...] | None = None
    channels: tuple[str, ...] | None = None
    sla: SlaStatus | None = None
    level: int | None = None
    tokens: tuple[str, ...] = ()
    created_from: datetime | None = None
    created_to: datetime | None = None  # exclusive
    limit: int = 50
    after: tuple[str, str] | None = None  # (deadline key, submission id) of the last row seen
    cutoffs: Cutoffs = field(default_factory=dict)  # per kind: (first response, resolution)
    clock: datetime | None = None


def deadline_key() -> ColumnElement[Any]:
    """The nearest running deadline as stored text, or :data:`NO_DEADLINE`."""
    s = submissions.c
    fr, rd = s.first_response_due, s.resolution_due
    # As plain text: the no-deadline mark is not an instant.
    return type_coerce(
        case(
            (and_(fr.is_not(None), or_(rd.is_(None), fr <= rd)), type_coerce(fr, String)),
            (rd.is_not(None), type_coerce(rd, String)),
            else_=literal(NO_DEADLINE, String),
        ),
        String,
    )


def sla_expressions(
    clock: datetime | None, cutoffs: Cutoffs
) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """(overdue, at risk) of a submission row at ``clock``, first match wins."""
    s = submissions.c
    overdue: ColumnElement[bool] = or_(
        s.first_response_overdue == true(), s.resolution_overdue == true()
    )
    if clock is not None:
        overdue = or_(
            overdue,
            and_(s.first_response_due.is_not(None), s.first_response_due < clock),
            and_(s.resolution_due.is_not(None), s.resolution_due < clock),
        )
    risky = []
    for kind, (first_by, resolution_by) in sorted(cutoffs.items()):
        running = []
        if first_by is not None:
            running.append(and_(s.first_response_due.is_not(None), s.arrived_at <= first_by))
        if resolution_by is not None:
            running.append(and_(s.resolution_due.is_not(None), s.arrived_at <= resolution_by))
        if running:
            risky.append(and_(s.kind == kind, or_(*running)))
    at_risk: ColumnElement[bool] = or_(*risky) if risky else false()
    return overdue, at_risk


class WorkQueue(StoreBase):
    """The work queue over the read model."""

    def work_queue(self, q: QueueQuery) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
        """One page of the queue and the keyset position after it (None on the last page).

        Each row: the submission's columns, ``title``/``body``/``language``
        (None while its text is not indexed yet), ``deadline_key``.
        """
        s = submissions.c
        key = deadline_key().label("deadline_key")
        overdue, at_risk = sla_expressions(q.clock, q.cutoffs)
        conditions: list[ColumnElement[bool]] = []
        if q.units is not None:
            conditions.append(s.unit_id.in_(q.units))
        if q.ids is not None:
            conditions.append(s.submission_id.in_(q.ids))
        if q.status is not None:
            conditions.append(s.status == q.status)
        if q.kinds:
            conditions.append(s.kind.in_(q.kinds))
        if q.channels:
            conditions.append(s.channel.in_(q.channels))
        if q.level is not None:
            conditions.append(s.level == q.level)
        if q.created_from is not None:
            conditions.append(s.created_at >= q.created_from)
        if q.created_to is not None:
            conditions.append(s.created_at < q.created_to)
        if q.sla is not None:
            conditions.append(s.status == "open")
            if q.sla == "overdue":
                conditions.append(overdue)
            elif q.sla == "at_risk":
                conditions.append(and_(~overdue, at_risk))
            else:
                conditions.append(and_(~overdue, ~at_risk))
        if q.tokens:
            conditions.append(s.submission_id.in_(self._matching(q.tokens)))
        if q.after is not None:
            after_key, after_id = q.after
            conditions.append(
                or_(key > after_key, and_(key == after_key, s.submission_id > after_id))
            )
        t = submission_texts.c
        stmt = (
            select(submissions, t.title, t.body, t.language, key)
            .join_from(
                submissions, submission_texts, t.submission_id == s.submission_id, isouter=True
            )
            .where(*conditions)
            .order_by(key, s.submission_id)
            .limit(min(q.limit, MAX_LIMIT) + 1)
        )
        with self._reading("reading the work queue") as conn:
            rows = [dict(r._mapping) for r in conn.execute(stmt)]
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        after = (rows[-1]["deadline_key"], rows[-1]["submission_id"]) if more and rows else None
        return rows, after

    def _matching(self, tokens: tuple[str, ...]) -> Any:
        """The ids of submissions whose search key contains every token."""
        if self.dialect == "sqlite":
            fts = table(SEARCH_PREFIX, column("search_key"), column("submission_id"))
            return select(fts.c.submission_id).where(
                *(fts.c.search_key.like(f"%{tok}%") for tok in tokens)
            )
        t = submission_texts.c
        return select(t.submission_id).where(*(t.search_key.like(f"%{tok}%") for tok in tokens))

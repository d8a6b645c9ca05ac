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
    column,
    false,
    literal_column,
    or_,
    select,
    table,
    true,
    tuple_,
)

from sada.consumers.store.base import StoreBase
from sada.consumers.store.texts import SEARCH_PREFIX, submission_texts
from sada.consumers.tables import instant_text, submissions
from sada.pipeline.domain.sla import SlaStatus

# Sorts after every instant in stored form: submissions without a deadline come last.
NO_DEADLINE: Final = "~"
MAX_LIMIT: Final = 1000
# Up to this many matches, a search reads its ids from the search index first.
SEARCH_CAP: Final = 2000

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


# The nearest running deadline, spelled once as SQL: the migration's expression
# index (``ix_work_queue_urgency``) is on exactly this expression, so the
# default order is read off the index instead of sorting the table.
URGENCY_SQL: Final = (
    "CASE WHEN first_response_due IS NOT NULL AND "
    "(resolution_due IS NULL OR first_response_due <= resolution_due) "
    "THEN first_response_due WHEN resolution_due IS NOT NULL THEN resolution_due "
    f"ELSE '{NO_DEADLINE}' END"
)


def deadline_key() -> ColumnElement[Any]:
    """The nearest running deadline as stored text, or :data:`NO_DEADLINE`."""
    return literal_column(f"({URGENCY_SQL})", String)


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
        key = deadline_key()
        overdue, at_risk = sla_expressions(q.clock, q.cutoffs)
        conditions: list[ColumnElement[bool]] = []
        if q.units is not None:
            conditions.append(s.unit_id.in_(q.units))
        if q.ids is not None:
            conditions.append(s.submission_id.in_(q.ids))
        status: ColumnElement[Any] = s.status
        if self.dialect == "sqlite":
            # Unary plus hides the column from SQLite's planner, which (without
            # statistics) would pick the status index and sort most of the table
            # rather than walk the urgency index and stop after one page.
            status = literal_column("+submissions.status", String)
        if q.status is not None:
            conditions.append(status == q.status)
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
            conditions.append(status == "open")
            if q.sla == "overdue":
                conditions.append(overdue)
            else:
                if q.clock is not None:
                    # Implied by "not overdue" (no running deadline before the
                    # clock), and lets the urgency index skip every overdue row.
                    conditions.append(key >= instant_text(q.clock))
                if q.sla == "at_risk":
                    conditions.append(and_(~overdue, at_risk))
                else:
                    conditions.append(and_(~overdue, ~at_risk))
        t = submission_texts.c
        if q.tokens:
            conditions.append(self._search_condition(q.tokens))
        if q.after is not None:
            after_key, after_id = q.after
            # A row value: both backends walk the urgency index from this point.
            conditions.append(tuple_(key, s.submission_id) > tuple_(after_key, after_id))
        stmt = (
            select(submissions, t.title, t.body, t.language, key.label("deadline_key"))
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

    def _search_condition(self, tokens: tuple[str, ...]) -> ColumnElement[bool]:
        """Submissions whose search key contains every token, by the cheaper of two plans.

        A rare term: its few ids from the search index (FTS5 or trigram), then
        the page among them. A common one (more than :data:`SEARCH_CAP`
        matches): walk the urgency order and test each key, which finds a page
        after a few rows. Both test the same key with the same LIKE, so they
        give the same rows.
        """
        with self._reading("searching submission texts", states=False) as conn:
            ids = list(conn.scalars(self._matching(tokens).limit(SEARCH_CAP + 1)))
        if len(ids) <= SEARCH_CAP:
            return submissions.c.submission_id.in_(ids)
        # On the texts the page joins already (by primary key, row by row).
        t = submission_texts.c
        return and_(*(t.search_key.like(f"%{tok}%") for tok in tokens))

    def _matching(self, tokens: tuple[str, ...]) -> Any:
        """The ids of submissions whose search key contains every token, from the index."""
        if self.dialect == "sqlite":
            fts = table(SEARCH_PREFIX, column("search_key"), column("submission_id"))
            return select(fts.c.submission_id).where(
                *(fts.c.search_key.like(f"%{tok}%") for tok in tokens)
            )
        t = submission_texts.c
        return select(t.submission_id).where(*(t.search_key.like(f"%{tok}%") for tok in tokens))

"""The operations view: read-only queries behind /metrics and /dashboard.

:mod:`sada.consumers.snapshot` turns these rows into SLA gauges and the
units' ranking; here they are only counted and fetched.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Text,
    case,
    cast,
    func,
    select,
    true,
    union,
)
from sqlalchemy.dialects.postgresql import JSONB

from sada.consumers.store.base import StoreBase
from sada.consumers.store.joins import EVENT_RECORD, RESPONSE_EVENT, RESPONSE_LOG_ORDER
from sada.consumers.store.queue import sla_expressions
from sada.consumers.tables import archive, escalations, events, responses, submissions


class Operations(StoreBase):
    """SLA counts and the units' history, for the operators."""

    def sla_counts(
        self,
        clock: datetime | None,
        at_risk_by: dict[str, tuple[datetime | None, datetime | None]],
    ) -> tuple[dict[tuple[str, str, str], int], dict[tuple[str, str], int]]:
        """Open submissions by (unit, kind, SLA status); closed ones by (unit, kind).

        The status of an open submission, first match wins: ``overdue`` when a
        deadline has passed (an overdue flag is set, or a running deadline is
        before ``clock``); ``at_risk`` when a running clock started at or before
        the cutoff of its kind in ``at_risk_by`` (first response, resolution;
        ``None``: never at risk); else ``on_time``. Without ``clock`` only the
        flags make a submission overdue.
        """
        s = submissions.c
        overdue, at_risk = sla_expressions(clock, at_risk_by)  # the queue's, written once
        status = case((overdue, "overdue"), (at_risk, "at_risk"), else_="on_time")
        # Grouped in an outer query: PostgreSQL cannot match a GROUP BY expression
        # carrying bound parameters to the same expression in the select list.
        inner = select(s.unit_id, s.kind, status.label("sla")).where(s.status == "open").subquery()
        with self._reading("counting submissions by SLA status") as conn:
            open_rows = conn.execute(
                select(inner.c.unit_id, inner.c.kind, inner.c.sla, func.count()).group_by(
                    inner.c.unit_id, inner.c.kind, inner.c.sla
                )
            ).all()
            closed_rows = conn.execute(
                select(s.unit_id, s.kind, func.count())
                .where(s.status == "closed")
                .group_by(s.unit_id, s.kind)
            ).all()
        return (
            {(u, k, st): int(n) for u, k, st, n in open_rows},
            {(u, k): int(n) for u, k, n in closed_rows},
        )

    def unit_history(self) -> dict[str, list[Any]]:
        """What the units' ranking is computed from, as rows with named columns.

        - ``submissions``: submission_id, kind, status, unit_id (now), created_at,
          first_response_overdue, satisfaction;
        - ``origins``: submission_id, unit_id: the unit a submission was created
          at, read from its archived ``submission.created`` event, for those that
          have moved since (escalated or referred);
        - ``escalations``: submission_id, time, to_level, from_unit_id,
          to_unit_id, reason;
        - ``responses``: the effective ones: submission_id, at, offset, unit_id,
          kind, referred_to_unit_id, in log order.
        """
        s, e, r = submissions.c, escalations.c, responses.c
        origin: ColumnElement[Any]
        if self.dialect == "postgresql":
            origin = (
                func.convert_from(archive.c.record, "UTF8")
                .cast(JSONB)
                .op("#>>")("{event,data,unit_id}")
            )
        else:
            origin = func.json_extract(cast(archive.c.record, Text), "$.event.data.unit_id")
        moved = union(
            select(e.submission_id),
            select(r.submission_id).where(r.kind == "referral", r.effective == true()),
        ).subquery()
        with self._reading("reading unit history") as conn:
            subs = conn.execute(
                select(
                    s.submission_id,
                    s.kind,
                    s.status,
                    s.unit_id,
                    s.created_at,
                    s.first_response_overdue,
                    s.satisfaction,
                ).order_by(s.submission_id)
            ).all()
            origins = conn.execute(
                select(events.c.submission_id, origin.label("unit_id"))
                .join_from(events, archive, EVENT_RECORD)
                .where(
                    events.c.type == "sada.submission.created",
                    events.c.submission_id.in_(select(moved.c.submission_id)),
                )
            ).all()
            escs = conn.execute(
                select(
                    e.submission_id, e.time, e.to_level, e.from_unit_id, e.to_unit_id, e.reason
                ).order_by(e.submission_id, e.time, e.to_level)
            ).all()
            resps = conn.execute(
                select(
                    r.submission_id,
                    r.at,
                    events.c.offset,
                    r.unit_id,
                    r.kind,
                    r.referred_to_unit_id,
                )
                .join_from(responses, events, RESPONSE_EVENT, isouter=True)
                .where(r.effective == true())
                .order_by(r.submission_id, *RESPONSE_LOG_ORDER)
            ).all()
        return {
            "submissions": list(subs),
            "origins": list(origins),
            "escalations": list(escs),
            "responses": list(resps),
        }

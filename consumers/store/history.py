"""Totals and time series read from the store, for the dashboard's cards and charts.

Everything here is counted in the database, so it survives a restart (the
metrics' counters start again from zero with the process): events applied
and late, rejections, escalations by reason and level, and the instants
that the charts bucket (submissions created, escalations, open submissions'
creation times). Bucketing by the organisation's days happens in the caller,
which knows the time zone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select, true

from sada.consumers.store.base import StoreBase
from sada.consumers.tables import escalations, events, rejections, submissions


class History(StoreBase):
    """Totals and instants, for the dashboard."""

    def totals(self) -> dict[str, Any]:
        """Counts over everything the store holds."""
        e, x = escalations.c, events.c
        with self._reading("counting totals", states=False) as conn:
            applied = conn.execute(
                select(func.count(), func.count().filter(x.late == true()))
            ).one()
            rejected = int(conn.scalar(select(func.count()).select_from(rejections)) or 0)
            by_reason: dict[str, int] = {
                str(k): int(n)
                for k, n in conn.execute(select(e.reason, func.count()).group_by(e.reason))
            }
            by_level: dict[int, int] = {
                int(k): int(n)
                for k, n in conn.execute(select(e.to_level, func.count()).group_by(e.to_level))
            }
            subs = int(conn.scalar(select(func.count()).select_from(submissions)) or 0)
        return {
            "accepted": int(applied[0]),
            "late": int(applied[1]),
            "rejected": rejected,
            "received": int(applied[0]) + rejected,
            "escalations": sum(by_reason.values()),
            "escalations_by_reason": by_reason,
            "escalations_by_level": {str(k): n for k, n in sorted(by_level.items())},
            "submissions": subs,
        }

    def closures(self) -> list[tuple[str, datetime, datetime]]:
        """(kind, created_at, closed_at) of every closed submission."""
        s = submissions.c
        with self._reading("reading closures") as conn:
            rows = conn.execute(
                select(s.kind, s.created_at, s.closed_at).where(
                    s.status == "closed", s.closed_at.is_not(None)
                )
            ).all()
        return [(str(k), c, d) for k, c, d in rows]

    def instants_since(self, since: datetime) -> dict[str, list[datetime]]:
        """``created``: creation instants of submissions created since ``since``;
        ``escalated``: instants of escalations since then; ``open_created``: the
        creation instants of every open submission."""
        s, e = submissions.c, escalations.c
        with self._reading("reading instants") as conn:
            created = list(conn.scalars(select(s.created_at).where(s.created_at >= since)))
            escalated = list(conn.scalars(select(e.time).where(e.time >= since)))
            open_created = list(conn.scalars(select(s.created_at).where(s.status == "open")))
        return {"created": created, "escalated": escalated, "open_created": open_created}

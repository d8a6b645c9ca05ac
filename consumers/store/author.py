"""What the author sees of a submission, by its tracking code (the tracking API's JSON).

Instants are spelled as stored (RFC 3339, UTC, microseconds); responses come
in log order, escalations in level order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from sada.consumers.store.base import StoreBase
from sada.consumers.store.joins import RESPONSE_EVENT, RESPONSE_LOG_ORDER
from sada.consumers.store.rows import time_text
from sada.consumers.tables import escalations, events, rejections, responses, submissions

_CHUNK = 500  # ids per IN list, well under every driver's bound on parameters


class AuthorView(StoreBase):
    """The store's answers to a submission's author."""

    def submission_by_code(self, code: str) -> dict[str, Any] | None:
        """What the author sees for a tracking code (ASCII digits), or None if unknown."""
        with self._reading("looking up a tracking code") as conn:
            s = conn.execute(select(submissions).where(submissions.c.tracking_code == code)).first()
            if s is None:
                return None
            rs = conn.execute(
                select(responses, events.c.offset)
                .join_from(responses, events, RESPONSE_EVENT, isouter=True)
                .where(responses.c.submission_id == s.submission_id)
                .order_by(*RESPONSE_LOG_ORDER)
            ).all()
            es = conn.execute(
                select(escalations)
                .where(escalations.c.submission_id == s.submission_id)
                .order_by(escalations.c.to_level, escalations.c.time, escalations.c.event_id)
            ).all()
        return {
            "submission_id": s.submission_id,
            "tracking_code": s.tracking_code,
            "kind": s.kind,
            "channel": s.channel,
            "status": s.status,
            "unit_id": s.unit_id,
            "level": s.level,
            "support": s.support,
            "oppose": s.oppose,
            "deadlines": {
                "first_response": time_text(s.first_response_due),
                "resolution": time_text(s.resolution_due),
            },
            "overdue": {
                "first_response": s.first_response_overdue,
                "resolution": s.resolution_overdue,
            },
            "created_at": time_text(s.created_at),
            "arrived_at": time_text(s.arrived_at),
            "first_response_at": time_text(s.first_response_at),
            "closed_at": time_text(s.closed_at),
            "updated_at": time_text(s.updated_at),
            "satisfaction": s.satisfaction,
            "responses": [
                {
                    "response_id": r.response_id,
                    "unit_id": r.unit_id,
                    "kind": r.kind,
                    "referred_to_unit_id": r.referred_to_unit_id,
                    "at": time_text(r.at),
                    "effective": r.effective,
                }
                for r in rs
            ],
            "escalations": [
                {
                    "event_id": e.event_id,
                    "time": time_text(e.time),
                    "from_level": e.from_level,
                    "to_level": e.to_level,
                    "from_unit_id": e.from_unit_id,
                    "to_unit_id": e.to_unit_id,
                    "reason": e.reason,
                    "support": e.support,
                    "deadline": time_text(e.deadline),
                }
                for e in es
            ],
        }

    def known_submissions(self, ids: Iterable[str]) -> set[str]:
        """Those of the submission ids ``ids`` the read model has (the gateway's question:
        may an event about it take effect at once, or must it wait for its submission?)."""
        wanted = list(dict.fromkeys(ids))
        out: set[str] = set()
        with self._reading("looking up submissions") as conn:
            for i in range(0, len(wanted), _CHUNK):
                chunk = wanted[i : i + _CHUNK]
                out.update(
                    conn.scalars(
                        select(submissions.c.submission_id).where(
                            submissions.c.submission_id.in_(chunk)
                        )
                    )
                )
        return out

    def event_outcome(self, source: str, event_id: str) -> dict[str, Any] | None:
        """What became of the event ``source`` + ``id``: taken effect (late or not), or
        rejected with the reason; None while nothing is decided about it."""
        key = f"{source} {event_id}"
        with self._reading("looking up an event", states=False) as conn:
            e = conn.execute(select(events).where(events.c.key == key)).first()
            if e is not None:
                return {
                    "source": source,
                    "id": event_id,
                    "status": "late" if e.late else "accepted",
                    "type": e.type,
                    "submission_id": e.submission_id,
                    "time": time_text(e.time),
                    "took_effect_at": time_text(e.at),
                    "effective": bool(e.effective),
                    "note": e.note,
                }
            r = conn.execute(select(rejections).where(rejections.c.key == key)).first()
            if r is not None:
                return {
                    "source": source,
                    "id": event_id,
                    "status": "rejected",
                    "reason": r.reason,
                    "detail": r.detail,
                    "input": {
                        "topic": r.src_topic,
                        "partition": r.src_partition,
                        "offset": r.src_offset,
                    },
                }
        return None

"""The store's side of notifications: followers, the notification outbox, webhook deliveries.

The projector's batch write calls :func:`write_batch` inside its one
transaction, so a batch's follow changes and notifications are there with
its effects or not at all. Publishing marks notifications published and, in
the same transaction, adds one ``deliveries`` row per subscribed webhook
endpoint: a crash in between publishes again (same ids) and never makes a
delivery twice. The delivery loop claims due rows, one endpoint at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    bindparam,
    delete,
    false,
    func,
    insert,
    select,
    true,
    update,
)

from sada.consumers.store.base import StoreBase
from sada.consumers.tables import deliveries, followers, notifications, webhook_endpoints
from sada.pipeline.domain.model import utc
from sada.pipeline.domain.notify import Notification
from sada.pipeline.domain.ports import BatchWrite

_CHUNK = 900


# Built once: a batch's follow changes are written with one executemany each.
_UNFOLLOW = delete(followers).where(
    and_(
        followers.c.submission_id == bindparam("f_submission"),
        followers.c.recipient == bindparam("f_recipient"),
    )
)


def write_batch(conn: Connection, batch: BatchWrite, told: bool) -> None:
    """A batch's follow changes and notifications; ``told``: already told (a rebuild)."""
    if batch.follows:
        # Each change replaces the pair's row, so only the last change of each
        # (submission, recipient) pair decides what the batch leaves behind.
        last = {(f.submission_id, f.recipient): f for f in batch.follows}
        conn.execute(_UNFOLLOW, [{"f_submission": s, "f_recipient": r} for s, r in last])
        on = [
            {"submission_id": f.submission_id, "recipient": f.recipient, "source": f.source}
            for f in last.values()
            if f.on
        ]
        if on:
            conn.execute(insert(followers), on)
    if batch.notifications:
        conn.execute(
            insert(notifications),
            [
                _row(batch.partition, offset, seq, n, told)
                for seq, (offset, n) in enumerate(batch.notifications)
            ],
        )


def _row(partition: int, offset: int, seq: int, n: Notification, told: bool) -> dict[str, Any]:
    return {
        "id": n.id,
        "partition": partition,
        "offset": offset,
        "seq": seq,
        "recipient": n.recipient,
        "type": n.type,
        "submission_id": n.submission_id,
        "decision_id": n.decision_id,
        "at": n.at,
        "source": n.source,
        "payload": json.dumps(n.data, sort_keys=True, separators=(",", ":")),
        "published": told,
    }


def _notification(r: Any) -> Notification:
    return Notification(
        r.id, r.type, r.recipient, r.submission_id, r.decision_id, utc(r.at), r.source,
        json.loads(r.payload),
    )  # fmt: skip


class NotificationStore(StoreBase):
    """Followers, the notification outbox and webhook deliveries."""

    def followers(self, submission_ids: Iterable[str]) -> dict[str, dict[str, str | None]]:
        wanted = sorted(set(submission_ids))
        out: dict[str, dict[str, str | None]] = {}
        with self._reading("reading followers", states=False) as conn:
            for i in range(0, len(wanted), _CHUNK):
                rows = conn.execute(
                    select(followers).where(followers.c.submission_id.in_(wanted[i : i + _CHUNK]))
                )
                for r in rows:
                    out.setdefault(r.submission_id, {})[r.recipient] = r.source
        return out

    def unpublished_notifications(
        self, limit: int = 1000, partitions: Iterable[int] | None = None
    ) -> list[Notification]:
        """Not yet on ``sada.notifications``, in decision order (of ``partitions``, if given)."""
        query = select(notifications).where(notifications.c.published == false())
        if partitions is not None:
            query = query.where(notifications.c.partition.in_(sorted(partitions)))
        c = notifications.c
        with self._reading("reading the notification outbox", states=False) as conn:
            rows = conn.execute(query.order_by(c.partition, c.offset, c.seq).limit(limit)).all()
        return [_notification(r) for r in rows]

    def mark_notifications_published(
        self, ids: Iterable[str], routes: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        """Mark published; with ``routes`` (id -> endpoints), add their deliveries too."""
        todo = list(dict.fromkeys(ids))
        if not todo:
            return
        now = utc(datetime.now().astimezone())
        with self._writing("marking notifications published") as conn:
            for i in range(0, len(todo), _CHUNK):
                chunk = todo[i : i + _CHUNK]
                conn.execute(
                    update(notifications)
                    .where(notifications.c.id.in_(chunk), notifications.c.published == false())
                    .values(published=true())
                )
            rows = [
                {
                    "notification_id": nid,
                    "endpoint": endpoint,
                    "state": "pending",
                    "attempts": 0,
                    "created_at": now,
                    "next_attempt_at": now,
                    "last_status": None,
                    "last_error": "",
                    "delivered_at": None,
                }
                for nid in todo
                for endpoint in (routes or {}).get(nid, ())
            ]
            if rows:
                have = {
                    (a, b)
                    for a, b in conn.execute(
                        select(deliveries.c.notification_id, deliveries.c.endpoint).where(
                            deliveries.c.notification_id.in_([r["notification_id"] for r in rows])
                        )
                    )
                }
                fresh = [r for r in rows if (r["notification_id"], r["endpoint"]) not in have]
                if fresh:
                    conn.execute(insert(deliveries), fresh)

    # -- webhook deliveries ---------------------------------------------------------------

    def due_deliveries(
        self, endpoint: str, now: datetime, limit: int = 100
    ) -> list[tuple[Notification, int, datetime]]:
        """Pending deliveries of ``endpoint`` due by ``now``: (notification, attempts, created)."""
        d, n = deliveries.c, notifications.c
        with self._reading("reading due deliveries", states=False) as conn:
            rows = conn.execute(
                select(notifications, d.attempts, d.created_at)
                .join(deliveries, d.notification_id == n.id)
                .where(d.endpoint == endpoint, d.state == "pending", d.next_attempt_at <= now)
                .order_by(n.partition, n.offset, n.seq)
                .limit(limit)
            ).all()
        return [(_notification(r), r.attempts, utc(r.created_at)) for r in rows]

    def claim_delivery(
        self, notification_id: str, endpoint: str, now: datetime, until: datetime
    ) -> bool:
        """Take one due delivery for an attempt, leased until ``until``; False if another
        worker took it first (or it is no longer due). A worker that dies mid-attempt
        leaves the lease to run out: the delivery is tried again, with the same id."""
        d = deliveries.c
        with self._writing("claiming a delivery") as conn:
            done = conn.execute(
                update(deliveries)
                .where(
                    d.notification_id == notification_id,
                    d.endpoint == endpoint,
                    d.state == "pending",
                    d.next_attempt_at <= now,
                )
                .values(next_attempt_at=until)
            )
        return bool(done.rowcount == 1)

    def record_attempt(
        self,
        notification_id: str,
        endpoint: str,
        state: str,
        status: int | None,
        error: str,
        next_at: datetime,
        at: datetime,
    ) -> None:
        """The outcome of one attempt: ``state`` pending (retry at ``next_at``), delivered
        or failed (given up)."""
        d = deliveries.c
        with self._writing("recording a delivery attempt") as conn:
            conn.execute(
                update(deliveries)
                .where(d.notification_id == notification_id, d.endpoint == endpoint)
                .values(
                    state=state,
                    attempts=d.attempts + 1,
                    last_status=status,
                    last_error=error[:500],
                    next_attempt_at=next_at,
                    delivered_at=at if state == "delivered" else None,
                )
            )

    def oldest_undelivered(self) -> dict[str, datetime]:
        """Per endpoint, when its oldest pending delivery was created."""
        d = deliveries.c
        with self._reading("reading deliveries", states=False) as conn:
            rows = conn.execute(
                select(d.endpoint, func.min(d.created_at))
                .where(d.state == "pending")
                .group_by(d.endpoint)
            ).all()
        return {e: utc(t) for e, t in rows}

    def deliveries_list(self, states: Iterable[str] | None = None) -> list[dict[str, Any]]:
        d = deliveries.c
        query = select(deliveries, notifications.c.type, notifications.c.recipient).join(
            notifications, notifications.c.id == d.notification_id
        )
        if states is not None:
            query = query.where(d.state.in_(sorted(states)))
        with self._reading("listing deliveries", states=False) as conn:
            rows = conn.execute(query.order_by(d.endpoint, d.created_at, d.notification_id)).all()
        return [dict(r._mapping) for r in rows]

    def retry_deliveries(self, endpoint: str | None, now: datetime) -> int:
        """Failed deliveries (of ``endpoint``, or all) made pending again, due now."""
        d = deliveries.c
        where = [d.state == "failed"]
        if endpoint is not None:
            where.append(d.endpoint == endpoint)
        with self._writing("retrying deliveries") as conn:
            done = conn.execute(
                update(deliveries).where(*where).values(state="pending", next_attempt_at=now)
            )
        return int(done.rowcount or 0)

    def endpoint_states(self) -> dict[str, tuple[datetime | None, str]]:
        """Endpoints ever disabled or enabled: id -> (disabled at or None, reason)."""
        with self._reading("reading webhook endpoints", states=False) as conn:
            rows = conn.execute(select(webhook_endpoints)).all()
        return {r.id: (r.disabled_at, r.reason) for r in rows}

    def set_endpoint_disabled(self, endpoint: str, at: datetime | None, reason: str) -> None:
        """Disable ``endpoint`` (``at`` given) or enable it again (``at`` None)."""
        w = webhook_endpoints.c
        with self._writing("disabling a webhook endpoint") as conn:
            conn.execute(delete(webhook_endpoints).where(w.id == endpoint))
            conn.execute(
                insert(webhook_endpoints).values(id=endpoint, disabled_at=at, reason=reason)
            )

    def endpoint_disabled(self, endpoint: str) -> bool:
        w = webhook_endpoints.c
        with self._reading("reading a webhook endpoint", states=False) as conn:
            row = conn.execute(
                select(w.disabled_at).where(w.id == endpoint, w.disabled_at.is_not(None))
            ).first()
        return row is not None

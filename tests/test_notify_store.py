"""Notifications in the SQL store (SQLite and PostgreSQL): written with the projector's
batch in one transaction, read back in decision order, fanned out to webhook
deliveries once, and written as already told by a rebuild (replay never notifies)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from test_notify import RULES, _history
from test_store import BACKENDS, OpenStore
from test_store import open_store as open_store  # a fixture
from test_store import postgres_admin as postgres_admin  # a fixture

from sada.consumers.store import SqlStore
from sada.pipeline.domain.memstore import MemoryStore
from sada.pipeline.domain.projector import Projector

NOW = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest) -> SqlStore:
    open_: OpenStore = request.getfixturevalue("open_store")
    return open_(request.param)


def test_round_trip_equals_the_memory_store(store: SqlStore) -> None:
    memory = MemoryStore()
    records = list(enumerate(_history()))
    Projector(RULES, memory, 0).apply_batch(records)
    projector = Projector(RULES, store, 0)
    projector.apply_batch(records[:3])
    projector.apply_batch(records[3:])
    want = memory.unpublished_notifications()
    assert len(want) >= 8
    assert store.unpublished_notifications() == want
    assert store.unpublished_notifications(partitions=[1]) == []
    assert store.followers(["sub-1", "sub-2"]) == memory.followers(["sub-1", "sub-2"])
    assert store.followers(["sub-1"])["sub-1"] == {
        "author:stu-1": "/integrations/telegram",
        "follower:v2": "/integrations/telegram",  # reached through the source of its vote
    }
    # A redelivered log (a restarted projector) adds nothing.
    Projector(RULES, store, 0).apply_batch(records)
    assert store.unpublished_notifications() == want


def test_publishing_fans_out_to_deliveries_once(store: SqlStore) -> None:
    Projector(RULES, store, 0).apply_batch(list(enumerate(_history())))
    todo = store.unpublished_notifications()
    routes = {n.id: ["hook-a", "hook-b"] for n in todo if n.recipient.startswith("unit:")}
    store.mark_notifications_published([n.id for n in todo], routes)
    store.mark_notifications_published([n.id for n in todo], routes)  # a crash, again
    assert store.unpublished_notifications() == []
    listed = store.deliveries_list()
    assert len(listed) == 2 * len(routes)
    assert {(r["notification_id"], r["endpoint"]) for r in listed} == {
        (nid, e) for nid, es in routes.items() for e in es
    }
    due = store.due_deliveries("hook-a", datetime.now(UTC) + timedelta(seconds=1))
    assert [n.id for n, _, _ in due] == [n.id for n in todo if n.id in routes]
    first = due[0][0]
    soon = datetime.now(UTC) + timedelta(seconds=1)
    lease = soon + timedelta(seconds=15)
    assert store.claim_delivery(first.id, "hook-a", soon, lease)
    assert not store.claim_delivery(first.id, "hook-a", soon, lease)  # another worker: no
    assert store.claim_delivery(first.id, "hook-a", lease, lease)  # the lease ran out
    later = datetime.now(UTC) + timedelta(hours=1)
    store.record_attempt(first.id, "hook-a", "pending", 500, "boom", later, NOW)
    assert first.id not in {
        n.id for n, _, _ in store.due_deliveries("hook-a", datetime.now(UTC) + timedelta(seconds=1))
    }
    store.record_attempt(first.id, "hook-a", "failed", 500, "boom", later, NOW)
    assert store.retry_deliveries("hook-a", NOW) == 1
    again = store.due_deliveries("hook-a", datetime.now(UTC) + timedelta(seconds=1))
    assert (first.id, 2) in {(n.id, attempts) for n, attempts, _ in again}
    assert set(store.oldest_undelivered()) == {"hook-a", "hook-b"}
    store.set_endpoint_disabled("hook-b", NOW, "410 Gone")
    assert store.endpoint_disabled("hook-b") and not store.endpoint_disabled("hook-a")
    assert store.endpoint_states()["hook-b"] == (NOW, "410 Gone")


def test_a_rebuild_writes_notifications_as_told(store: SqlStore) -> None:
    with store.rebuilding():
        Projector(RULES, store, 0).apply_batch(list(enumerate(_history())))
    assert store.unpublished_notifications() == []

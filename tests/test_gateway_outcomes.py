"""The gateway's answers against a running ``sada run``: honest about what it cannot know yet.

``POST /api/v1/events`` answers ``duplicate`` for an event published before
(however it was published: the store's ledger knows it), ``pending`` for an
event whose submission has not arrived (and ``GET /api/v1/events/{id}`` later
tells how it ended), and ``accepted`` for an event about a submission the
store has. ``sada run`` wires the gateway to its store, on each broker of the
matrix.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    FAST_TIMERS,
    EventFactory,
    RawProducer,
    SadaProcess,
    clean_env,
    free_port,
    get_json,
    metric_by_label,
    start_named_broker,
    start_run,
    wait_for,
    wait_healthy,
)

from sada.infra import topics

pytestmark = [pytest.mark.broker, pytest.mark.timeout(300)]

PORTAL_KEY = "demo-portal-key"  # the shipped configuration's demo integrator
PORTAL = "/integrations/portal"


@dataclass
class Running:
    run: SadaProcess
    port: int
    bootstrap: str

    def post(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/v1/events",
            data=json.dumps(events, ensure_ascii=False).encode(),
            headers={"Authorization": f"Bearer {PORTAL_KEY}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            assert reply.status == 202
            body: dict[str, Any] = json.loads(reply.read())
        return body

    def outcome(self, ce: dict[str, Any]) -> dict[str, Any]:
        # get_json percent-encodes the path as a client would.
        reply = get_json(self.port, f"/api/v1/events/{ce['id']}?source={ce['source']}")
        assert reply is not None
        body: dict[str, Any] = reply[1]
        return body

    def decided(self, ce: dict[str, Any]) -> dict[str, Any]:
        """What became of ``ce``, once something did."""
        return wait_for(
            lambda: (o := self.outcome(ce))["status"] != "pending" and o,
            60,
            f"a decision on {ce['id']}",
            watch=self.run,
        )


@pytest.fixture
def running(broker_kind: str, tmp_path: Path) -> Iterator[Running]:
    broker, bootstrap = start_named_broker(broker_kind, tmp_path)
    try:
        port = free_port()
        env = clean_env(SADA_CLOCK="event", **FAST_TIMERS)
        run = start_run(tmp_path, tmp_path / "data", port, bootstrap=bootstrap, env=env)
        try:
            wait_healthy(run, port)
            yield Running(run, port, bootstrap)
        finally:
            run.close()
    finally:
        broker.close()


def results(body: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(r["status"], r.get("reason")) for r in body["results"]]


def test_duplicates_and_pending_events_are_answered_as_such(running: Running) -> None:
    f = EventFactory(seed=71, source=PORTAL)
    now = datetime.now(UTC)
    sub = f.submission(now - timedelta(minutes=5))
    sid = sub["subject"]
    # The submission comes straight through Kafka, as any integrator's may: this
    # gateway never saw it, so only the store can tell it exists.
    producer = RawProducer(running.bootstrap)
    producer.send(topics.SUBMISSIONS, json.dumps(sub).encode(), sid.encode())
    producer.flush()
    producer.close()
    assert running.decided(sub)["status"] == "accepted"

    # Sent again through the gateway: published before, so a duplicate.
    again = running.post([sub])
    assert results(again) == [("duplicate", None)]
    assert f"/api/v1/events/{sub['id']}?source=" in again["results"][0]["detail"]

    # A vote for it, now that it was processed: accepted, and it takes effect.
    vote = f.vote(sid, "voter-1", time=now - timedelta(minutes=4))
    # A vote for a submission that never comes: pending, then rejected downstream.
    orphan = f.vote("sub-that-never-comes", "voter-2", time=now - timedelta(minutes=4))
    answer = running.post([vote, orphan, vote])
    assert results(answer) == [("accepted", None), ("pending", None), ("duplicate", None)]
    assert {k: answer[k] for k in ("accepted", "duplicate", "pending", "rejected")} == {
        "accepted": 1,
        "duplicate": 1,
        "pending": 1,
        "rejected": 0,
    }
    assert "'sub-that-never-comes'" in answer["results"][1]["detail"]
    assert running.decided(vote)["status"] == "accepted"
    ended = running.decided(orphan)
    assert (ended["status"], ended["reason"]) == ("rejected", "unknown_submission")

    # Re-sent once decided: a duplicate either way, and nothing changes.
    assert results(running.post([orphan, vote])) == [("duplicate", None)] * 2
    tracked = get_json(running.port, f"/api/v1/submissions/{sub['data']['tracking_code']}")
    assert tracked is not None and tracked[1]["support"] == 1

    # Every event posted was counted once, by its result.
    counted = metric_by_label(running.port, "sada_gateway_events_total", "result")
    assert counted == {"accepted": 1.0, "duplicate": 4.0, "pending": 1.0, "rejected": 0.0}

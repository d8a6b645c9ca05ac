"""``sada run`` as an operator meets it: one per data directory, honest health, nothing lost.

- a second ``sada run`` on the same data directory refuses with one line;
- the embedded broker dying under ``sada run``: health turns unhealthy within
  seconds and ``sada run`` stops with one line and a non-zero exit;
- ``GET /api/v1/events/{id}?source=…`` tells what became of a published event
  (accepted, late, rejected with the reason; pending while undecided);
- an event stamped further ahead than ``SADA_MAX_FUTURE`` is rejected
  ``time_in_future``, by ingress and by the gateway alike;
- an event accepted 30 s ahead of the clock is held by the projector (in its
  checkpoint) and survives a clean stop and a SIGKILL, taking effect when its
  time comes.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    FAST_TIMERS,
    EventFactory,
    RawProducer,
    clean_env,
    descendants,
    free_port,
    get_json,
    healthz,
    read_topic,
    start_run,
    wait_for,
    wait_healthy,
)

from sada.infra import topics

pytestmark = pytest.mark.timeout(300)


def _value(ce: dict[str, Any]) -> bytes:
    return json.dumps(ce, ensure_ascii=False).encode()


def _status(port: int, ce: dict[str, Any]) -> dict[str, Any]:
    reply = get_json(port, f"/api/v1/events/{ce['id']}?source={ce['source']}")
    assert reply is not None
    body: dict[str, Any] = reply[1]
    return body


def test_a_second_run_on_one_data_directory_refuses_in_one_line(tmp_path: Path) -> None:
    port = free_port()
    first = start_run(tmp_path / "a", tmp_path / "data", port, name="first")
    try:
        wait_healthy(first, port)
        second = start_run(tmp_path / "b", tmp_path / "data", free_port(), name="second")
        assert second.wait(60) != 0
        out = (second.stdout() + second.stderr()).strip().splitlines()
        assert len(out) == 1, second.output()
        assert "in use by sada run" in out[0] and str(first.pid) in out[0]
        assert healthz(port) is not None, "the first run was disturbed"
    finally:
        first.close()


def test_the_embedded_broker_dying_stops_sada_run_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    run = start_run(tmp_path, tmp_path / "data", port)
    try:
        wait_healthy(run, port)
        brokers = [
            p for p in descendants(run.pid) if "broker" in p.cmdline and "tansu" in p.cmdline
        ]
        assert len(brokers) == 1, descendants(run.pid)
        os.kill(brokers[0].pid, signal.SIGKILL)
        code = run.wait(30)
        assert code != 0
        lines = [line for line in run.stdout().splitlines() if line.startswith("sada run:")]
        assert len(lines) == 1 and "embedded broker stopped" in lines[0], run.output()
        assert "Traceback" not in run.stderr()
    finally:
        run.close()


@pytest.fixture
def live(tmp_path: Path) -> Any:
    port = free_port()
    run = start_run(
        tmp_path, tmp_path / "data", port, env=clean_env(SADA_CLOCK="event", **FAST_TIMERS)
    )
    health = wait_healthy(run, port)
    yield run, port, health["broker"]["bootstrap"]
    run.close()


def test_what_became_of_an_event_is_told_by_id_and_source(live: Any) -> None:
    run, port, bootstrap = live
    f = EventFactory(seed=11)
    now = datetime.now(UTC)
    sub = f.submission(now - timedelta(minutes=5))
    vote = f.vote(sub["subject"], "voter-1", "support", now - timedelta(minutes=4))
    orphan = f.vote("sub-that-never-comes", "voter-2", "support", now - timedelta(minutes=4))
    ahead = f.vote(sub["subject"], "voter-3", "support", now + timedelta(hours=1))
    producer = RawProducer(bootstrap)
    for ce in (sub, vote, orphan, ahead):
        producer.send(topics.VOTES if ce is not sub else topics.SUBMISSIONS, _value(ce))
    producer.flush()
    producer.close()
    assert _status(port, sub)["status"] in {"pending", "accepted"}

    def decided() -> dict[str, dict[str, Any]] | None:
        got = {ce["id"]: _status(port, ce) for ce in (sub, vote, orphan, ahead)}
        return got if all(g["status"] != "pending" for g in got.values()) else None

    got = wait_for(decided, 60, "every event decided", watch=run)
    assert got[sub["id"]]["status"] == "accepted"
    assert got[vote["id"]]["status"] == "accepted"
    assert (got[orphan["id"]]["status"], got[orphan["id"]]["reason"]) == (
        "rejected",
        "unknown_submission",
    )
    assert (got[ahead["id"]]["status"], got[ahead["id"]]["reason"]) == (
        "rejected",
        "time_in_future",
    )
    # sada.dlq has each rejected input once, unchanged.
    dlq = wait_for(
        lambda: (r := read_topic(bootstrap, topics.DLQ)) and len(r) >= 2 and r,
        30,
        "two sada.dlq records",
    )
    assert sorted(r.headers["sada.reason"] for r in dlq) == ["time_in_future", "unknown_submission"]
    assert {r.value for r in dlq} == {_value(orphan), _value(ahead)}
    unknown = _status(port, {"id": "never-sent", "source": "/nowhere"})
    assert unknown["status"] == "pending"


def test_the_gateway_rejects_an_event_from_the_future_at_once(live: Any) -> None:
    _run, port, _bootstrap = live
    f = EventFactory(seed=12, source="/integrations/portal")
    ahead = f.submission(datetime.now(UTC) + timedelta(hours=2))
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/events",
        data=json.dumps(ahead).encode(),
        headers={"Authorization": "Bearer demo-portal-key", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        body = json.loads(reply.read())
    assert body["rejected"] == 1
    assert body["results"][0]["reason"] == "time_in_future"


@pytest.mark.parametrize("stop", ["sigint", "sigkill"])
def test_an_event_accepted_30_s_ahead_survives_a_stop(tmp_path: Path, stop: str) -> None:
    env = clean_env(SADA_CLOCK="wall", SADA_TICK_SECONDS="0.5", SADA_IDLE_SECONDS="1")
    port = free_port()
    f = EventFactory(seed=13)
    due = datetime.now(UTC) + timedelta(seconds=30)
    ahead = f.submission(due)
    code = ahead["data"]["tracking_code"]

    run = start_run(tmp_path / "1", tmp_path / "data", port, env=env, name="run-1")
    health = wait_healthy(run, port)
    producer = RawProducer(health["broker"]["bootstrap"])
    producer.send(topics.SUBMISSIONS, _value(ahead), ahead["subject"].encode())
    producer.flush()
    producer.close()
    # The projector holds it: forwarded, not yet in effect.
    wait_for(
        lambda: (h := healthz(port)) and h["workers"]["ingress"]["buffered"] == 1,
        30,
        "the event held by the projector",
        watch=run,
    )
    assert get_json(port, f"/api/v1/submissions/{code}") == (404, _not_found(code))
    if stop == "sigint":
        assert run.interrupt(30) == 0, run.output()
    else:
        run.kill()

    run = start_run(tmp_path / "2", tmp_path / "data", port, env=env, name="run-2")
    try:
        wait_healthy(run, port)
        remaining = (due - datetime.now(UTC)).total_seconds()
        assert remaining > 0, "the restart took longer than the event's lead: nothing proved"
        found = wait_for(
            lambda: (r := get_json(port, f"/api/v1/submissions/{code}")) and r[0] == 200 and r[1],
            remaining + 30,
            "the held event to take effect after the restart",
            watch=run,
        )
        assert found["submission_id"] == ahead["subject"]
        assert datetime.now(UTC) >= due
    finally:
        run.close()


def _not_found(code: str) -> dict[str, str]:
    return {"error": "not_found", "message": f"no submission has tracking code {code}"}

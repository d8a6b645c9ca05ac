"""Following end to end: ``sada.submission.followed`` / ``unfollowed`` on a real broker,
through ``sada run``, to ``sada.notifications`` and a real local webhook receiver.

Four people follow one submission: one by a follow event, one who follows and stops,
one who follows by a support vote and stops, and one who follows a submission that
never comes. When the holding unit answers, exactly the first is told (on the topic
and at the webhook subscribed to followers), by pseudonym; the follow of the missing
submission ends on ``sada.dlq`` as a vote for it would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    FAST_TIMERS,
    SOURCE,
    UNIT,
    EventFactory,
    RawProducer,
    clean_env,
    free_port,
    read_topic,
    start_run,
    wait_for,
    wait_healthy,
)
from standardwebhooks import Webhook as Verifier
from test_e2e_webhooks import GOOD_SECRET, Receiver

from sada.infra import topics
from sada.producers.events import build_event

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]


def _config(tmp_path: Path, port: int) -> Path:
    shipped = Path(__file__).resolve().parent.parent / "sada" / "default_config.toml"
    hook = (
        f'\n[[webhooks]]\nid = "good"\nurl = "http://127.0.0.1:{port}/good"\n'
        f'secret = "{GOOD_SECRET}"\ntypes = ["sada.notification.responded"]\n'
        'recipients = ["follower"]\n'
    )
    path = tmp_path / "sada.toml"
    path.write_text(shipped.read_text("utf-8") + hook, "utf-8")
    return path


def _follow(factory: EventFactory, sid: str, who: str, on: bool = True) -> dict[str, Any]:
    type_ = "sada.submission.followed" if on else "sada.submission.unfollowed"
    data = {"submission_id": sid, "follower_id": who}
    return build_event(type_, data, source=SOURCE, rng=factory.rng)


def test_followers_are_told_of_the_answer_and_unfollowers_are_not(tmp_path: Path) -> None:
    receiver = Receiver()
    receiver.start()
    env = clean_env(**FAST_TIMERS, SADA_CONFIG=str(_config(tmp_path, receiver.port)))
    port = free_port()
    run = start_run(tmp_path / "run", tmp_path / "data", port, env=env)
    try:
        bootstrap = wait_healthy(run, port)["broker"]["bootstrap"]
        factory = EventFactory(seed=151)
        sub = factory.submission()
        sid = sub["data"]["submission_id"]
        producer = RawProducer(bootstrap)

        def send(topic: str, event: dict[str, Any]) -> None:
            subject = str(event["data"]["submission_id"]).encode()
            producer.send(topic, json.dumps(event).encode(), subject)
            producer.flush()

        send(topics.SUBMISSIONS, sub)
        send(topics.VOTES, _follow(factory, sid, "fan-a"))
        send(topics.VOTES, _follow(factory, sid, "fan-b"))
        send(topics.VOTES, factory.vote(sid, "fan-c"))
        send(topics.VOTES, _follow(factory, sid, "fan-b", on=False))
        send(topics.VOTES, _follow(factory, sid, "fan-c", on=False))
        missing = _follow(factory, "sub-never-created", "fan-d")
        send(topics.VOTES, missing)
        answer = factory.acknowledgement(sid, unit=UNIT)
        answer["data"]["kind"] = "answer"
        send(topics.RESPONSES, answer)
        producer.close()

        # Every notification of one decision is written in one transaction: once the
        # author's is on the topic, so are all the others.
        def told() -> list[dict[str, Any]] | None:
            events = [
                json.loads(r.value or b"") for r in read_topic(bootstrap, topics.NOTIFICATIONS)
            ]
            mine = [e for e in events if e["subject"] == sid]
            authors = [e for e in mine if e["data"]["recipient"].startswith("author:")]
            return mine if authors else None

        mine = wait_for(told, 60, "the answer's notifications", watch=run)
        assert {e["type"] for e in mine} == {"sada.notification.responded"}
        followers = [e["data"]["recipient"] for e in mine if "follower:" in e["data"]["recipient"]]
        assert len(followers) == 1, mine
        assert followers[0].startswith("follower:p:"), "a raw follower id reached the topic"
        assert all("fan-" not in e["data"]["recipient"] for e in mine)
        follower_note = next(e for e in mine if e["data"]["recipient"] == followers[0])
        assert follower_note["data"]["via"] == SOURCE

        hits = wait_for(lambda: receiver.of("good"), 60, "the follower's webhook", watch=run)
        headers, body, _ = hits[0]
        event = Verifier(GOOD_SECRET).verify(body, headers)
        assert event["id"] == follower_note["id"] == headers["webhook-id"]

        # The follow of a submission that never came: rejected, as a vote for it would be.
        def rejected() -> list[Any] | None:
            dead = read_topic(bootstrap, topics.DLQ)
            return [r for r in dead if json.loads(r.value or b"")["id"] == missing["id"]] or None

        dead = wait_for(rejected, 60, "the unknown submission's follow on the DLQ", watch=run)
        assert [r.headers["sada.reason"] for r in dead] == ["unknown_submission"]
        assert run.interrupt() == 0, run.output()
        assert [h["webhook-id"] for h, _, _ in receiver.of("good")] == [event["id"]]
    finally:
        run.close()
        receiver.stop()

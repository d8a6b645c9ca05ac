"""Webhooks end to end: a running ``sada run`` delivers to a real local HTTP receiver.

A scripted history (two submissions pushed over a one-step support ladder,
then an acknowledgement) gives two escalations. Three endpoints subscribe to
escalations of units under the root: one answers 200, one fails each
webhook's first three attempts, one answers 410 Gone. Every signature is
checked with the ``standardwebhooks`` package (not the project's code); the
topic ``sada.notifications`` is read with a plain Kafka consumer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from e2e_support import (
    FAST_TIMERS,
    PARENT_UNIT,
    SADA,
    EventFactory,
    RawProducer,
    clean_env,
    free_port,
    metric_by_label,
    read_topic,
    start_run,
    wait_for,
    wait_healthy,
)
from standardwebhooks import Webhook as Verifier

from sada.infra import topics
from sada.pipeline.domain.notify import notification_id

pytestmark = [pytest.mark.broker, pytest.mark.timeout(240)]

GOOD_SECRET = "whsec_" + base64.b64encode(b"good-endpoint-key-0123456789").decode()
FLAKY_SECRET = "whsec_" + base64.b64encode(b"flaky-endpoint-key-012345678").decode()
GONE_SECRET = "whsec_" + base64.b64encode(b"gone-endpoint-key-0123456789").decode()


class Receiver:
    """An HTTP server on 127.0.0.1 in a thread of its own, keeping every request."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[tuple[str, dict[str, str], bytes, int]] = []
        self.lock = threading.Lock()
        self._seen: Counter[str] = Counter()
        self.hang = True  # "slow" answers nothing while set
        self._loop = asyncio.new_event_loop()
        self._released = asyncio.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        name = request.match_info["name"]
        msg_id = request.headers.get("webhook-id", "")
        with self.lock:
            self._seen[f"{name} {msg_id}"] += 1
            attempt = self._seen[f"{name} {msg_id}"]
            status = {"good": 200, "gone": 410}.get(name, 500 if attempt <= 3 else 204)
            if name == "slow":
                status = 0 if self.hang else 200
            self.requests.append((name, dict(request.headers), body, status))
        if status == 0:  # never answered: the sender is killed meanwhile
            await self._released.wait()
            raise web.HTTPServiceUnavailable()
        return web.Response(status=status)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10)

    def stop(self) -> None:
        async def down() -> None:
            self._released.set()
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(down(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def of(self, name: str) -> list[tuple[dict[str, str], bytes, int]]:
        with self.lock:
            return [(h, b, s) for n, h, b, s in self.requests if n == name]


def _config(tmp_path: Path, port: int, names: tuple[str, ...] = ("good", "flaky", "gone")) -> Path:
    shipped = Path(__file__).resolve().parent.parent / "sada" / "default_config.toml"
    text = shipped.read_text("utf-8").replace("support = [50, 200, 1000]", "support = [3]")
    assert "support = [3]" in text
    hooks = ""
    secrets = {"good": GOOD_SECRET, "flaky": None, "gone": GONE_SECRET, "slow": GOOD_SECRET}
    for name in names:
        secret = secrets[name]
        hooks += (
            f'\n[[webhooks]]\nid = "{name}"\nurl = "http://127.0.0.1:{port}/{name}"\n'
            + (f'secret = "{secret}"\n' if secret else 'secret_env = "SADA_WEBHOOK_FLAKY"\n')
            + f'types = ["sada.notification.escalated"]\nunits = ["{PARENT_UNIT}"]\n'
        )
    path = tmp_path / "sada.toml"
    path.write_text(text + hooks, "utf-8")
    return path


def test_escalations_reach_subscribed_webhooks_once_signed_retried_and_disabled_by_410(
    tmp_path: Path,
) -> None:
    receiver = Receiver()
    receiver.start()
    config = _config(tmp_path, receiver.port)
    data = tmp_path / "data"
    env = clean_env(
        **FAST_TIMERS,
        SADA_CONFIG=str(config),
        SADA_WEBHOOK_FLAKY=FLAKY_SECRET,
        SADA_WEBHOOK_BACKOFF_SECONDS="0.05",
    )
    port = free_port()
    run = start_run(tmp_path / "run", data, port, env=env)
    try:
        bootstrap = wait_healthy(run, port)["broker"]["bootstrap"]
        factory = EventFactory(seed=15)
        subs = [factory.submission() for _ in range(2)]
        producer = RawProducer(bootstrap)
        for sub in subs:
            producer.send(topics.SUBMISSIONS, json.dumps(sub).encode(), _key(sub))
        producer.flush()
        for sub in subs:
            for i in range(3):
                vote = factory.vote(_sid(sub), f"voter-{i}")
                producer.send(topics.VOTES, json.dumps(vote).encode(), _key(vote))
        producer.flush()
        escalations = wait_for(
            lambda: (e := read_topic(bootstrap, topics.ESCALATIONS)) and len(e) >= 2 and e,
            60,
            "two escalations",
            watch=run,
        )
        esc = [json.loads(r.value or b"") for r in escalations]
        assert len(esc) == 2 and {e["data"]["to_unit_id"] for e in esc} == {PARENT_UNIT}
        # After the escalation: the parent unit acknowledges the first submission.
        ack = factory.acknowledgement(_sid(subs[0]), unit=PARENT_UNIT)
        producer.send(topics.RESPONSES, json.dumps(ack).encode(), _key(ack))
        producer.flush()
        producer.close()
        want = {notification_id(e["id"], f"unit:{PARENT_UNIT}") for e in esc}

        # One delivery per (escalation, endpoint), each signed.
        good = wait_for(
            lambda: (g := receiver.of("good")) and len(g) >= 2 and g, 60, "good", watch=run
        )
        assert {h["webhook-id"] for h, _, _ in good} == want
        flaky = wait_for(
            lambda: (f := receiver.of("flaky")) and sum(s < 300 for _, _, s in f) >= 2 and f,
            60,
            "flaky to succeed",
            watch=run,
        )
        gone = receiver.of("gone")
        for secret, requests in ((GOOD_SECRET, good), (FLAKY_SECRET, flaky), (GONE_SECRET, gone)):
            verifier = Verifier(secret)
            for headers, body, _ in requests:
                event = verifier.verify(body, headers)
                assert event["id"] == headers["webhook-id"]
                assert event["type"] == "sada.notification.escalated"
        # The flaky endpoint: three failures, then the same webhook-id again, delivered.
        per_id: dict[str, list[int]] = {}
        for headers, _, status in flaky:
            per_id.setdefault(headers["webhook-id"], []).append(status)
        assert per_id == {i: [500, 500, 500, 204] for i in want}
        # 410: disabled at the first answer; the other notification is never tried.
        assert [s for _, _, s in gone] == [410]
        assert receiver.of("gone") == gone and len(receiver.of("good")) == 2

        # Per-endpoint metrics: deliveries, failed attempts (3 per flaky webhook, the 410).
        # (Waited for: the receiver may have answered before the sender has counted.)
        delivered = wait_for(
            lambda: (
                (d := metric_by_label(port, "sada_webhook_delivered_total", "endpoint"))
                and d["flaky"] + d["good"] >= 4
                and d
            ),
            30,
            "the deliveries counted",
            watch=run,
        )
        wait_for(
            lambda: (
                "2 delivered"
                in subprocess.run(
                    [SADA, "notifications", "list", "--data-dir", str(data)],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                ).stdout.split("flaky", 1)[-1]
            ),
            30,
            "the flaky deliveries recorded",
            watch=run,
        )
        failed = metric_by_label(port, "sada_webhook_failed_attempts_total", "endpoint")
        assert (delivered["good"], delivered["flaky"], delivered["gone"]) == (2, 2, 0)
        assert (failed["good"], failed["flaky"], failed["gone"]) == (0, 6, 1)
        attempts = metric_by_label(port, "sada_webhook_attempt_seconds_count", "endpoint")
        assert attempts["flaky"] == 8

        listed = subprocess.run(
            [SADA, "notifications", "list", "--data-dir", str(data)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
        lines = {line.split()[0]: line for line in listed.stdout.splitlines() if line[:1] != " "}
        assert "disabled" in lines["gone"] and "410" in lines["gone"], listed.stdout
        assert "enabled" in lines["good"] and "2 delivered" in lines["good"], listed.stdout
        assert "2 delivered" in lines["flaky"], listed.stdout

        # sada.notifications: the author's notifications of the first submission, in order.
        # The author is known by a pseudonym: ingress replaced the id before the log.
        raw_author = f"author:{subs[0]['data']['author']['id']}".encode()

        def authors() -> list[dict[str, Any]] | None:
            mine = [
                json.loads(r.value or b"")
                for r in read_topic(bootstrap, topics.NOTIFICATIONS)
                if (r.key or b"").startswith(b"author:p:")
            ]
            mine = [n for n in mine if n["subject"] == _sid(subs[0])]
            return mine if len(mine) >= 2 else None

        mine = wait_for(authors, 60, "the author's notifications", watch=run)
        keys = {r.key for r in read_topic(bootstrap, topics.NOTIFICATIONS)}
        assert raw_author not in keys, "a raw author id reached sada.notifications"
        assert [n["type"] for n in mine] == [
            "sada.notification.escalated",
            "sada.notification.responded",
        ]
        assert mine[0]["data"]["via"] == subs[0]["source"]
        assert [n["time"] for n in mine] == sorted(n["time"] for n in mine)
        assert run.interrupt() == 0, run.output()
    finally:
        run.close()
        receiver.stop()


def test_kill_9_mid_delivery_and_a_restart_lose_nothing_and_keep_the_ids(
    tmp_path: Path,
) -> None:
    receiver = Receiver()
    receiver.start()
    config = _config(tmp_path, receiver.port, ("slow",))
    data = tmp_path / "data"
    env = clean_env(**FAST_TIMERS, SADA_CONFIG=str(config), SADA_WEBHOOK_BACKOFF_SECONDS="0.05")
    port = free_port()
    first = start_run(tmp_path / "first", data, port, env=env)
    try:
        bootstrap = wait_healthy(first, port)["broker"]["bootstrap"]
        factory = EventFactory(seed=16)
        subs = [factory.submission() for _ in range(2)]
        producer = RawProducer(bootstrap)
        for sub in subs:
            producer.send(topics.SUBMISSIONS, json.dumps(sub).encode(), _key(sub))
        producer.flush()
        for sub in subs:
            for i in range(3):
                vote = factory.vote(_sid(sub), f"voter-{i}")
                producer.send(topics.VOTES, json.dumps(vote).encode(), _key(vote))
        producer.flush()
        producer.close()
        esc = wait_for(
            lambda: (e := read_topic(bootstrap, topics.ESCALATIONS)) and len(e) >= 2 and e,
            60,
            "two escalations",
            watch=first,
        )
        want = {
            notification_id(json.loads(r.value or b"")["id"], f"unit:{PARENT_UNIT}") for r in esc
        }
        wait_for(lambda: receiver.of("slow"), 60, "the first attempt", watch=first)
        first.kill()  # mid-attempt: the receiver has the request and has not answered
    finally:
        first.close()
    receiver.hang = False
    second = start_run(tmp_path / "second", data, port, name="sada-run-2", env=env)
    try:
        wait_healthy(second, port)

        def delivered() -> set[str] | None:
            ok = {h["webhook-id"] for h, _, s in receiver.of("slow") if s == 200}
            return ok if ok >= want else None

        assert wait_for(delivered, 90, "both deliveries after the restart", watch=second) == want
        verifier = Verifier(GOOD_SECRET)
        for headers, body, _ in receiver.of("slow"):
            assert verifier.verify(body, headers)["id"] == headers["webhook-id"]
        # Nothing under another id: every request carried one of the two.
        assert {h["webhook-id"] for h, _, _ in receiver.of("slow")} == want
        assert second.interrupt() == 0, second.output()
    finally:
        second.close()
        receiver.stop()


def test_a_missing_webhook_secret_stops_run_at_start_naming_it(tmp_path: Path) -> None:
    config = _config(tmp_path, free_port())
    env = clean_env(**FAST_TIMERS, SADA_CONFIG=str(config))
    run = start_run(tmp_path / "run", tmp_path / "data", free_port(), env=env)
    try:
        assert run.wait(60) != 0
        lines = run.stderr().strip().splitlines()
        assert len(lines) == 1 and "SADA_WEBHOOK_FLAKY" in lines[0], run.output()
    finally:
        run.close()


def _sid(event: dict[str, Any]) -> str:
    return str(event["data"]["submission_id"])


def _key(event: dict[str, Any]) -> bytes:
    return _sid(event).encode()

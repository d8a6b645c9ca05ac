"""Safe by default: no secret in any output, pseudonyms before anything lasts, clean stops.

Each test runs the installed ``sada`` as a user would (real embedded broker,
real PostgreSQL at ``SADA_TEST_POSTGRES_URL`` where a password matters; the
test server trusts loopback, so a planted password still connects).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import stat
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    FAST_TIMERS,
    SADA,
    EventFactory,
    SadaProcess,
    clean_env,
    descendants,
    free_port,
    get_json,
    running,
    start_run,
    wait_for,
    wait_healthy,
)
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from sada.infra.pseudonym_key import fingerprint
from sada.producers.privacy import is_pseudonym, pseudonymize_event

POSTGRES_URL = os.environ.get(
    "SADA_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
PLANTED_PASSWORD = "planted-db-Pw-7f3c"
PLANTED_KEY = "planted-pseudonym-key-91d2"
PLANTED_BEARER = "planted-integrator-key-5be0"
DEMO_KEY = "demo-portal-key"  # the shipped configuration's portal
PORTAL = "/integrations/portal"


@pytest.fixture
def planted_database() -> Iterator[str]:
    """A fresh PostgreSQL database, and its URL with a planted password."""
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"safety_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name, password=PLANTED_PASSWORD)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def post_events(port: int, events: list[dict[str, Any]], key: str = DEMO_KEY) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/events",
        data=json.dumps(events).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=15) as answer:
        assert answer.status == 202
        return json.loads(answer.read())


def tracked(port: int, code: str, support: int) -> dict[str, Any] | None:
    answer = get_json(port, f"/api/v1/submissions/{code}")
    if answer is None or answer[0] != 200 or answer[1]["support"] < support:
        return None
    body: dict[str, Any] = answer[1]
    return body


def sada(args: list[str], env: Mapping[str, str], cwd: Path, timeout: float = 60) -> Any:
    return subprocess.run(
        [SADA, *args], env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def stop_group(proc: SadaProcess, sig: signal.Signals = signal.SIGTERM) -> int:
    """The signal to the process's whole group (systemd's and ``timeout``'s way); its exit code."""
    os.killpg(proc.pid, sig)
    return proc.wait(60)


def feed(port: int, seed: int) -> tuple[EventFactory, dict[str, Any], list[str]]:
    """One submission by a planted author and two supporters, through the gateway."""
    events = EventFactory(seed, source=f"{PORTAL}/safety")
    created = events.submission()
    author = f"stu-planted-author-{seed}"
    created["data"]["author"]["id"] = author
    created["data"]["anonymous"] = True
    voters = [f"stu-planted-voter-{seed}-{i}" for i in range(2)]
    sid = created["data"]["submission_id"]
    post_events(port, [created])
    post_events(port, [events.vote(sid, v) for v in voters])
    return events, created, [author, *voters]


# -- 1. no secret in any output ---------------------------------------------------------------


def test_no_planted_secret_in_any_output_at_any_log_level(
    tmp_path: Path, planted_database: str
) -> None:
    env = clean_env(
        **FAST_TIMERS,
        SADA_DATABASE_URL=planted_database,
        SADA_PSEUDONYM_KEY=PLANTED_KEY,
        SADA_LOG_LEVEL="DEBUG",
    )
    data = tmp_path / "data"
    port = free_port()
    run = start_run(tmp_path, data, port, env=env)
    outputs: list[str] = []
    try:
        wait_healthy(run, port)
        assert "postgres:***@" in run.stdout()  # the startup line names the database, masked
        _, created, _ = feed(port, 1)
        code = created["data"]["tracking_code"]
        try:  # a key of no integrator: refused, and never repeated anywhere
            post_events(port, [created], key=PLANTED_BEARER)
        except urllib.error.HTTPError as e:
            assert e.code == 401 and PLANTED_BEARER not in e.read().decode()
        else:
            raise AssertionError("an unknown bearer key was accepted")
        wait_for(lambda: tracked(port, code, 2), 60, "the submission with its support", run)
        nd = tmp_path / "events.ndjson"
        nd.write_text(json.dumps(EventFactory(2, source=PORTAL).submission()) + "\n")
        args = ["--data-dir", str(data)]
        for command in (
            ["track", code, *args],
            ["track", code, "--json", *args],
            ["audit", "verify", *args],
            ["audit", "timeline", code, "--format", "json", *args],
            ["replay", "--verify", *args],
            ["publish", str(nd), *args],
            ["topics", *args],
            ["dlq", "--format", "json", *args],
            ["run", "--data-dir", str(tmp_path / "other"), "--port", str(port)],  # port in use
        ):
            done = sada(command, env, tmp_path)
            outputs += [done.stdout, done.stderr]
        bad = planted_database.replace("127.0.0.1:5432", "127.0.0.1:1")
        quiet = {**env, "SADA_LOG_LEVEL": "WARNING"}  # one line at the default level
        done = sada(["track", code, "--database", bad], quiet, tmp_path)
        assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
        outputs += [done.stdout, done.stderr]
    finally:
        stop_group(run)
    outputs += [run.stdout(), run.stderr()]
    outputs += [p.read_text(errors="replace") for p in data.rglob("*") if p.is_file()]
    outputs += [p.read_text(errors="replace") for p in tmp_path.glob("*.std*")]
    assert "DEBUG" in run.stderr()  # the libraries did talk: the check is not vacuous
    for out in outputs:
        assert PLANTED_PASSWORD not in out
        assert PLANTED_KEY not in out
        assert PLANTED_BEARER not in out and DEMO_KEY not in out  # integrator keys
    # The key never goes into the database: only its fingerprint.
    engine = create_engine(planted_database)
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT name, fingerprint FROM deployment_keys")).all()
        archived = conn.execute(text("SELECT record FROM archive")).scalars().all()
    engine.dispose()
    assert stored == [("pseudonym", fingerprint(PLANTED_KEY))]
    assert archived and not any(PLANTED_KEY.encode() in bytes(r) for r in archived)


# -- 2. pseudonymous by default -----------------------------------------------------------------


def sqlite_text(path: Path) -> str:
    """Every value of every table of a SQLite file, as text (blobs decoded leniently)."""
    parts = []
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, bytes):
                        parts.append(value.decode("utf-8", "replace"))
                    else:
                        parts.append(str(value))
    return "\n".join(parts)


def test_the_archive_of_a_default_run_holds_no_raw_person_id(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    run = start_run(tmp_path, data, port)  # no key configured: the embedded default
    try:
        wait_healthy(run, port)
        key_file = data / "pseudonym.key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        _, created, people = feed(port, 3)
        # And through `sada publish` beside the running pipeline.
        events = EventFactory(4, source=PORTAL)
        other = events.submission()
        people.append(other["data"]["author"]["id"])
        nd = tmp_path / "more.ndjson"
        nd.write_text(json.dumps(other) + "\n")
        done = sada(["publish", str(nd), "--data-dir", str(data)], clean_env(), tmp_path)
        assert done.returncode == 0, done.stderr
        for c, support in ((created, 2), (other, 0)):
            code = c["data"]["tracking_code"]
            wait_for(lambda c=code, n=support: tracked(port, c, n), 60, f"submission {code}", run)
    finally:
        assert stop_group(run) == 0
    stored = sqlite_text(data / "sada.db")
    assert created["data"]["submission_id"] in stored  # the run did archive it
    for person in people:
        assert person not in stored
    key = key_file.read_text().strip()
    assert key not in stored and fingerprint(key) in stored


def test_the_demo_traffic_is_pseudonymous_too(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    argv = [SADA, "run", "--demo", "--data-dir", str(data), "--port", str(port)]
    run = SadaProcess("sada-run-demo", argv, clean_env(**FAST_TIMERS), tmp_path)

    def archived() -> int | None:
        if not (data / "sada.db").exists():
            return None
        with sqlite3.connect(f"file:{data / 'sada.db'}?mode=ro", uri=True) as db:
            try:
                (n,) = db.execute("SELECT count(*) FROM archive").fetchone()
            except sqlite3.OperationalError:  # not migrated yet
                return None
        return int(n) if n >= 500 else None

    try:
        wait_healthy(run, port)
        wait_for(archived, 120, "500 archived records of demo traffic", run, interval=1.0)
    finally:
        assert stop_group(run) == 0, run.output()
    stored = sqlite_text(data / "sada.db")
    raw = re.findall(r'"(?:id|voter_id)":"p\d{6}"', stored)  # the simulator's people: p000123
    assert raw == []
    assert len(re.findall(r'"(?:id|voter_id)":"p:[0-9a-f]{64}"', stored)) >= 100


def test_a_worker_with_another_key_refuses_to_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    first = start_run(tmp_path, data, port, env=clean_env(**FAST_TIMERS, SADA_PSEUDONYM_KEY="a"))
    wait_healthy(first, port)
    assert stop_group(first) == 0
    second = start_run(
        tmp_path, data, port, name="second", env=clean_env(**FAST_TIMERS, SADA_PSEUDONYM_KEY="b")
    )
    assert second.wait(60) == 1
    lines = second.stderr().strip().splitlines()
    assert len(lines) == 1 and "SADA_PSEUDONYM_KEY" in lines[0] and "deployment" in lines[0]


# -- 4. clean stops ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sig", "whole_group"),
    [(signal.SIGTERM, True), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["SIGTERM-group", "SIGTERM-process", "SIGINT-group"],
)
def test_a_signal_stops_everything_cleanly(
    tmp_path: Path, sig: signal.Signals, whole_group: bool
) -> None:
    port = free_port()
    run = start_run(tmp_path, tmp_path / "data", port)
    try:
        wait_healthy(run, port)
        children = [p.pid for p in descendants(run.pid)]
        assert len(children) >= 2  # the embedded broker and the projector process
        if whole_group:
            os.killpg(run.pid, sig)
        else:
            run.proc.send_signal(sig)
        code = run.wait(60)
    finally:
        run.close()
    assert code == 0, run.output()
    assert "Traceback" not in run.output() and "failed" not in run.output()
    wait_for(lambda: not running(children), 10, "every child process to end")


# -- 6. fail fast, in one line ---------------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[str]:
    """``host:port`` of a server that accepts connections and never says a word."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


KAFKA_COMMANDS = [
    ["run", "--bootstrap", "{kafka}"],
    ["topics", "--bootstrap", "{kafka}"],
    ["publish", "{file}", "--bootstrap", "{kafka}"],
    ["simulate", "--publish", "--submissions", "3", "--bootstrap", "{kafka}"],
    ["dlq", "--bootstrap", "{kafka}"],
    ["replay", "--source", "log", "--bootstrap", "{kafka}"],
]
DATABASE_COMMANDS = [
    ["track", "57240000", "--database", "{db}"],
    ["audit", "verify", "--database", "{db}"],
    ["audit", "timeline", "57240000", "--database", "{db}"],
    ["replay", "--verify", "--database", "{db}"],
]
TIMEOUT = 2.0  # SADA_CONNECT_TIMEOUT for these tests; the default is 5


@pytest.mark.parametrize("silent", [False, True], ids=["refused", "silent"])
@pytest.mark.parametrize(
    "command", KAFKA_COMMANDS + DATABASE_COMMANDS, ids=lambda c: " ".join(c[:2])
)
def test_an_unreachable_kafka_or_database_is_one_line_within_the_timeout(
    tmp_path: Path, silent_server: str, command: list[str], silent: bool
) -> None:
    where = silent_server if silent else f"127.0.0.1:{free_port()}"
    nd = tmp_path / "one.ndjson"
    nd.write_text(json.dumps(EventFactory(7).submission()) + "\n")
    db = f"postgresql+psycopg2://postgres:{PLANTED_PASSWORD}@{where}/none"
    argv = [a.format(kafka=where, db=db, file=nd) for a in command]
    env = clean_env(SADA_CONNECT_TIMEOUT=str(TIMEOUT))
    started = time.monotonic()
    done = sada([*argv, "--data-dir", str(tmp_path / "data")], env, tmp_path)
    elapsed = time.monotonic() - started
    assert done.returncode == 1
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr and PLANTED_PASSWORD not in done.stderr
    assert where in done.stderr
    # The timeout, plus what starting the interpreter costs on a busy machine.
    assert elapsed < TIMEOUT + 6, f"{elapsed:.1f}s: {done.stderr}"


def test_pseudonymize_event_is_the_one_pure_function_for_every_way_in() -> None:
    events = EventFactory(8)
    created = events.submission()
    created["data"]["anonymous"] = True  # anonymous to the public, pseudonymous in the record
    vote = events.vote(created["data"]["submission_id"], "stu-1107")
    for ce, path in ((created, ("author", "id")), (vote, ("voter_id",))):
        before = json.dumps(ce, sort_keys=True)
        once = pseudonymize_event(ce, "k1")
        assert json.dumps(ce, sort_keys=True) == before  # the input is left as it was
        value: Any = once["data"]
        for part in path:
            value = value[part]
        assert is_pseudonym(value)
        assert pseudonymize_event(once, "k1") == once  # idempotent
        assert pseudonymize_event(ce, b"k1") == once  # str and bytes keys alike
        assert pseudonymize_event(ce, "k2") != once
        assert {k: v for k, v in once.items() if k != "data"} == {
            k: v for k, v in ce.items() if k != "data"
        }

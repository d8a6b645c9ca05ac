"""``sada run`` as a new user meets it: install, start, stop, restart.

Each test runs the real command as a child process, with the embedded broker
it starts itself, and judges it only by what a user sees: its exit code and
output, ``/healthz``, the tracking API, and the processes left running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from e2e_support import (
    PARENT_UNIT,
    EventFactory,
    RawProducer,
    clean_env,
    descendants,
    free_port,
    get_json,
    healthz,
    http_get,
    processes,
    running,
    start_run,
    wait_for,
    wait_healthy,
)

from sada.infra import topics

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent

# What pip would never need from a source tree, and what another run may be writing.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    "build",
    "dist",
    "*.egg-info",
    ".venv",
    "venv",
    "sada-data",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    "test-artifacts",
    "bench-results",
)


def _install_env() -> dict[str, str]:
    """An environment in which nothing of the test's own virtualenv can leak into another."""
    env = clean_env()
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(name, None)
    return env


def _fresh_install(tmp_path: Path) -> Path:
    """A new virtualenv with Sada installed by ``pip install <source tree>``; its bin/."""
    # pip builds a local directory in place; a copy keeps its build files out of the
    # shared working tree and away from any other run installing at the same time.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=_NOT_SOURCE)
    venv = tmp_path / "venv"
    env = _install_env()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", str(source)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert pip.returncode == 0, f"pip install failed:\n{pip.stdout[-3000:]}\n{pip.stderr[-3000:]}"
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sada; print(sada.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # not the source tree, which `import sada` would find first
        timeout=60,
        check=True,
    )
    # Installed into the new environment, not found through the test's own.
    assert Path(where.stdout.strip()).resolve().is_relative_to(venv.resolve()), where.stdout
    return venv / "bin"


@pytest.mark.timeout(900)
def test_fresh_install_runs_answers_health_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    bin_dir = _fresh_install(tmp_path)
    port = free_port()
    env = _install_env()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(bin_dir.parent)
    sada = start_run(
        tmp_path / "work", tmp_path / "data", port, env=env, sada=str(bin_dir / "sada")
    )
    try:
        health = wait_healthy(sada, port, timeout=60)
        assert f"http://127.0.0.1:{port}/healthz" in sada.stdout()
        bootstrap = health["broker"]["bootstrap"]
        assert health["broker"]["embedded"] is True
        listener = f"tcp://{bootstrap}"
        children = descendants(sada.pid)
        brokers = [p for p in children if listener in p.cmdline]
        assert brokers, f"no broker process listening on {bootstrap} under sada run: {children}"

        assert sada.interrupt(timeout=30) == 0, sada.output()
    finally:
        sada.close()

    # A child may take a moment to notice its parent has gone (the multiprocessing
    # resource tracker reads its pipe's end); each must be gone within seconds.
    wait_for(
        lambda: not running(p.pid for p in children),
        15,
        "every process sada run started to end (sada run left processes behind)",
    )
    assert [p for p in processes() if listener in p.cmdline and p.state != "Z"] == []
    assert http_get(port, "/healthz", timeout=2) is None, "the HTTP port still answers"
    assert (tmp_path / "data" / "sada.db").is_file()


@pytest.mark.timeout(120)
def test_second_run_on_a_busy_http_port_fails_at_once_with_a_one_line_reason(
    tmp_path: Path,
) -> None:
    port = free_port()
    first = start_run(tmp_path / "first", tmp_path / "data-1", port)
    try:
        wait_healthy(first, port)
        started = time.monotonic()
        second = start_run(tmp_path / "second", tmp_path / "data-2", port, name="sada-run-2")
        try:
            code = second.wait(timeout=20)
        finally:
            second.close()
        elapsed = time.monotonic() - started
        assert code != 0
        lines = second.stderr().strip().splitlines()
        assert len(lines) == 1, second.output()
        assert str(port) in lines[0] and "in use" in lines[0], lines[0]
        assert elapsed < 10, f"took {elapsed:.1f}s to give up"
        # The one already running is unharmed.
        wait_healthy(first, port, timeout=10)
        assert first.interrupt() == 0, first.output()
    finally:
        first.close()


def _lookup(port: int, code: str) -> dict[str, Any] | None:
    answer = get_json(port, f"/api/v1/submissions/{code}")
    if answer is None or answer[0] != 200:
        return None
    body: dict[str, Any] = answer[1]
    return body


def _totals(port: int) -> dict[str, Any]:
    answer = get_json(port, "/api/v1/dashboard")
    assert answer is not None and answer[0] == 200
    overview: dict[str, Any] = answer[1]["overview"]
    return {k: overview[k] for k in ("received", "accepted", "rejected", "late", "escalations")}


def _queue(port: int) -> list[str]:
    answer = get_json(port, "/api/v1/submissions?limit=100")
    assert answer is not None and answer[0] == 200
    return [item["tracking_code"] for item in answer[1]["items"]]


@pytest.mark.timeout(180)
def test_restart_on_the_same_data_directory_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    factory = EventFactory(seed=3)
    popular, contested, retracted = (factory.submission() for _ in range(3))
    expected = {  # tracking code -> (support, oppose, level)
        popular["data"]["tracking_code"]: (55, 2, 1),
        contested["data"]["tracking_code"]: (2, 2, 0),
        retracted["data"]["tracking_code"]: (1, 0, 0),
    }

    def matches(port: int, want: dict[str, tuple[int, int, int]]) -> dict[str, Any] | None:
        seen = {code: _lookup(port, code) for code in want}
        for code, (support, oppose, level) in want.items():
            got = seen[code]
            if got is None or (got["support"], got["oppose"], got["level"]) != (
                support,
                oppose,
                level,
            ):
                return None
        return seen

    first = start_run(tmp_path / "first", data, port)
    try:
        bootstrap = wait_healthy(first, port)["broker"]["bootstrap"]
        producer = RawProducer(bootstrap)
        for sub in (popular, contested, retracted):
            producer.send(topics.SUBMISSIONS, _json(sub), _key(sub))
        producer.flush()
        votes = [factory.vote(_sid(popular), f"voter-{i}") for i in range(55)]
        votes += [factory.vote(_sid(popular), f"critic-{i}", "oppose") for i in range(2)]
        votes += [factory.vote(_sid(contested), f"voter-{i}") for i in range(3)]
        votes += [factory.vote(_sid(contested), "critic-0", "oppose")]
        votes += [factory.vote(_sid(retracted), f"voter-{i}") for i in range(2)]
        for vote in votes:
            producer.send(topics.VOTES, _json(vote), _key(vote))
        producer.flush()
        # Sent after the votes above: a change of mind and a retraction.
        producer.send(topics.VOTES, *_value_key(factory.vote(_sid(contested), "voter-2", "oppose")))
        producer.send(topics.VOTES, *_value_key(factory.retraction(_sid(retracted), "voter-1")))
        producer.send(topics.RESPONSES, *_value_key(factory.acknowledgement(_sid(contested))))
        producer.flush()
        producer.close()

        before = wait_for(lambda: matches(port, expected), 60, "the votes to count", watch=first)
        escalations = before[popular["data"]["tracking_code"]]["escalations"]
        assert [(e["reason"], e["to_unit_id"]) for e in escalations] == [
            ("support_threshold", PARENT_UNIT)
        ]
        assert len(before[contested["data"]["tracking_code"]]["responses"]) == 1
        totals = _totals(port)
        queue = _queue(port)
        assert totals["escalations"] == 1 and totals["accepted"] >= 3 + len(votes)
        assert set(queue) == set(expected)
        assert f"http://127.0.0.1:{port}/dashboard" in first.stdout(), first.output()
        assert first.interrupt() == 0, first.output()
    finally:
        first.close()

    second = start_run(tmp_path / "second", data, port, name="sada-run-2")
    try:
        bootstrap = wait_healthy(second, port)["broker"]["bootstrap"]
        assert "restored" in second.stdout(), second.output()
        after = {code: _lookup(port, code) for code in expected}
        assert after == before
        # The dashboard's totals are the store's, not counters that began again at 0.
        assert _totals(port) == totals
        assert _queue(port) == queue

        vote = factory.vote(_sid(popular), "voter-after-restart")
        producer = RawProducer(bootstrap)
        producer.send(topics.VOTES, _json(vote), _key(vote))
        producer.flush()
        producer.close()
        code = popular["data"]["tracking_code"]
        now = wait_for(
            lambda: matches(port, {**expected, code: (56, 2, 1)}),
            30,
            "the vote after the restart to count",
            watch=second,
        )
        # The vote changed its submission's support and nothing else anywhere.
        for c, shown in now.items():
            old = before[c]
            if c == code:
                shown = {**shown, "support": old["support"], "updated_at": old["updated_at"]}
            assert shown == old, c
        assert second.interrupt() == 0, second.output()
    finally:
        second.close()


def _sid(event: dict[str, Any]) -> str:
    return str(event["data"]["submission_id"])


def _json(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


def _key(event: dict[str, Any]) -> bytes:
    return _sid(event).encode()


def _value_key(event: dict[str, Any]) -> tuple[bytes, bytes]:
    return _json(event), _key(event)


@pytest.mark.timeout(180)
def test_projector_runs_in_its_own_process_and_dies_with_a_killed_run(tmp_path: Path) -> None:
    port = free_port()
    sada = start_run(tmp_path / "work", tmp_path / "data", port)
    try:
        health = wait_healthy(sada, port)
        assert health["workers"]["projector"]["state"] == "running"
        children = descendants(sada.pid)
        projectors = [p for p in children if "spawn_main" in p.cmdline]
        assert len(projectors) == 1, f"expected one projector process: {children}"

        # The projector in that process applies what ingress logs: a submission's
        # votes arrive in its state, read back through the parent's API.
        factory = EventFactory(seed=11)
        sub = factory.submission()
        producer = RawProducer(health["broker"]["bootstrap"])
        producer.send(topics.SUBMISSIONS, _json(sub), _key(sub))
        for i in range(3):
            vote = factory.vote(_sid(sub), f"voter-{i}")
            producer.send(topics.VOTES, _json(vote), _key(vote))
        producer.flush()
        producer.close()
        code = sub["data"]["tracking_code"]
        wait_for(
            lambda: (_lookup(port, code) or {}).get("support") == 3 or None,
            60,
            "the votes to reach the store",
            watch=sada,
        )
        applied = wait_for(
            lambda: (healthz(port) or {}).get("workers", {}).get("projector", {}).get("applied"),
            10,
            "the projector's count to reach /healthz",
        )
        assert applied >= 4

        sada.kill()  # SIGKILL: no chance to stop its children
        wait_for(
            lambda: running(p.pid for p in children) == [] or None,
            30,
            "the projector process (and every other child) to exit after sada run was killed",
        )
    finally:
        sada.close()

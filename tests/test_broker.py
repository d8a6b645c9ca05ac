"""The embedded broker, topic creation and the canonical-log partitioner, against real Tansu.

The ``sada broker`` and ``sada topics`` commands run as separate processes,
as a user runs them, so signals, exit codes and output are the real ones.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer as ConfluentProducer
from kafka import KafkaAdminClient, KafkaProducer

from sada.infra.broker import EmbeddedBroker, broker_answers, port_is_free
from sada.infra.topics import DLQ, TOPICS, ensure_topics, murmur2, partition_for
from sada.pipeline.domain.errors import BrokerError

pytestmark = pytest.mark.broker

SADA = [sys.executable, "-m", "sada.app.cli"]
SADA_TOPICS = {t.name for t in TOPICS}


# --- helpers -------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def _stat(pid: int) -> tuple[str, str, int] | None:
    """(comm, state, ppid) of a process, or None if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    state, ppid = text[text.rindex(")") + 2 :].split()[:2]
    return comm, state, int(ppid)


def tansu_alive(pid: int) -> bool:
    """Whether ``pid`` is a live Tansu process (a zombie awaiting its reaper is dead)."""
    stat = _stat(pid)
    return stat is not None and stat[0].startswith("tansu") and stat[1] != "Z"


def tansu_children(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[2] == parent and stat[0].startswith("tansu"):
                found.append(int(entry.name))
    return found


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def describe(bootstrap: str, names: list[str]) -> dict[str, dict[str, Any]]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return {t["name"]: t for t in admin.describe_topics(names)}
    finally:
        admin.close()


def sada_env(**changes: str | None) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class SadaBroker:
    """``sada broker`` running as a child process of the test."""

    def __init__(self, port: int, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [*SADA, "broker", "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=sada_env(SADA_BROKER_BIN=None),
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def first_line(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self._lines.get(timeout=0.1).rstrip("\n")
            except queue.Empty:
                if self.proc.poll() is not None and self._lines.empty():
                    raise AssertionError(
                        f"sada broker exited with {self.proc.returncode}: {self.stderr()}"
                    ) from None
        raise AssertionError(f"sada broker printed nothing within {timeout}s")

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def tansu_pid(self) -> int:
        children = tansu_children(self.proc.pid)
        assert len(children) == 1, f"expected one tansu child, found {children}"
        return children[0]


@contextmanager
def sada_broker(port: int, cwd: Path) -> Iterator[SadaBroker]:
    running = SadaBroker(port, cwd)
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.proc.kill()
        running.proc.wait(timeout=30)


# --- the embedded broker ---------------------------------------------------------------


def test_session_broker_answers_kafka_metadata_requests(broker: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=broker)
    try:
        assert isinstance(admin.list_topics(), list)
    finally:
        admin.close()
    assert broker.startswith("127.0.0.1:")


def test_embedded_broker_listens_on_the_given_port_and_stop_ends_the_process(
    free_port: int, tmp_path: Path
) -> None:
    with EmbeddedBroker(free_port, log_dir=tmp_path) as embedded:
        assert embedded.bootstrap == f"127.0.0.1:{free_port}"
        pid = embedded.pid
        assert pid is not None and tansu_alive(pid)
        assert broker_answers(embedded.bootstrap)
    assert not tansu_alive(pid)
    assert not accepts_connections(free_port)
    assert port_is_free("127.0.0.1", free_port)
    # Tansu's own output went to the log file, not to our output.
    assert f"127.0.0.1:{free_port}" in (tmp_path / "tansu.log").read_text()


def test_embedded_broker_on_a_busy_port_fails_with_a_reason(broker: str) -> None:
    busy = int(broker.rsplit(":", 1)[1])
    with pytest.raises(BrokerError, match=f"port {busy} .* already in use"):
        EmbeddedBroker(busy).start()


def test_missing_broker_binary_is_reported(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="not an executable file"):
        EmbeddedBroker(broker_bin=str(tmp_path / "no-such-tansu")).start()


def test_broker_that_exits_at_start_is_reported_with_its_last_words(tmp_path: Path) -> None:
    fake = tmp_path / "fake-tansu"
    fake.write_text("#!/bin/sh\necho starting\necho 'fatal: cannot open storage' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(BrokerError) as raised:
        EmbeddedBroker(broker_bin=str(fake)).start(timeout=30)
    message = str(raised.value)
    assert "code 3" in message
    assert message.endswith("fatal: cannot open storage")
    assert "\n" not in message


# --- topics ------------------------------------------------------------------------------


def test_ensure_topics_creates_once_then_reports_existing(tmp_path: Path) -> None:
    with EmbeddedBroker(log_dir=tmp_path) as embedded:
        first = ensure_topics(embedded.bootstrap, 3)
        assert {s.name for s in first} == SADA_TOPICS
        assert {s.status for s in first} == {"created"}

        described = describe(embedded.bootstrap, sorted(SADA_TOPICS))
        counts = {name: len(t["partitions"]) for name, t in described.items()}
        assert counts == {name: 1 if name == DLQ else 3 for name in SADA_TOPICS}
        assert {s.name: s.partitions for s in first} == counts

        second = ensure_topics(embedded.bootstrap, 3)
        assert [(s.name, s.partitions, s.status) for s in second] == [
            (s.name, s.partitions, "exists") for s in first
        ]

        # Asking for more partitions reports the shortfall and changes nothing.
        third = ensure_topics(embedded.bootstrap, 5)
        assert {s.name: s.status for s in third} == {
            name: "exists" if name == DLQ else "fewer-partitions" for name in SADA_TOPICS
        }
        again = describe(embedded.bootstrap, sorted(SADA_TOPICS))
        assert {n: t["topic_id"] for n, t in again.items()} == {
            n: t["topic_id"] for n, t in described.items()
        }
        assert {n: len(t["partitions"]) for n, t in again.items()} == counts


def test_ensure_topics_on_unreachable_cluster_raises_broker_error(free_port: int) -> None:
    with pytest.raises(BrokerError, match=f"127.0.0.1:{free_port}"):
        ensure_topics(f"127.0.0.1:{free_port}", 4, timeout=1)


def test_topics_command_prints_a_table_of_the_topics(broker: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [*SADA, "topics", "--bootstrap", broker, "--partitions", "2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["topic", "partitions", "status"]
    listed = {row.split()[0]: row.split()[1:] for row in rows}
    assert set(listed) == SADA_TOPICS
    actual = {n: len(t["partitions"]) for n, t in describe(broker, sorted(SADA_TOPICS)).items()}
    for name, (count, status, *_) in listed.items():
        assert int(count) == actual[name]
        assert status in {"created", "exists", "fewer-partitions"}


def test_topics_command_without_bootstrap_fails_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [*SADA, "topics"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=sada_env(SADA_KAFKA_BOOTSTRAP=None),
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert "--bootstrap" in done.stderr and "SADA_KAFKA_BOOTSTRAP" in done.stderr


def test_topics_command_against_nothing_fails_with_one_line(free_port: int, tmp_path: Path) -> None:
    done = subprocess.run(
        [*SADA, "topics", "--bootstrap", f"127.0.0.1:{free_port}", "--timeout", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode != 0
    assert len(done.stderr.splitlines()) == 1
    assert f"127.0.0.1:{free_port}" in done.stderr


# --- the sada broker command -----------------------------------------------------------


def test_broker_command_serves_until_sigint_and_takes_tansu_down(
    free_port: int, tmp_path: Path
) -> None:
    with sada_broker(free_port, tmp_path) as running:
        assert running.first_line() == f"broker listening on 127.0.0.1:{free_port}"
        tansu = running.tansu_pid()
        # The topics exist by the time the line is printed.
        described = describe(f"127.0.0.1:{free_port}", sorted(SADA_TOPICS))
        assert all(t["error_code"] == 0 for t in described.values())

        running.proc.send_signal(signal.SIGINT)
        assert running.proc.wait(timeout=30) == 0
        assert running.stderr() == ""
        wait_until(lambda: not tansu_alive(tansu), 10, "the tansu child to exit")
        assert not accepts_connections(free_port)


def test_broker_command_on_a_busy_port_fails_with_one_line(broker: str, tmp_path: Path) -> None:
    busy = broker.rsplit(":", 1)[1]
    done = subprocess.run(
        [*SADA, "broker", "--port", busy],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert "already in use" in done.stderr
    assert broker_answers(broker), "the broker already on the port must be unharmed"


def test_tansu_dies_with_a_sigkilled_broker_command(free_port: int, tmp_path: Path) -> None:
    with sada_broker(free_port, tmp_path) as running:
        assert running.first_line() == f"broker listening on 127.0.0.1:{free_port}"
        tansu = running.tansu_pid()
        running.proc.kill()
        running.proc.wait(timeout=30)
        wait_until(lambda: not tansu_alive(tansu), 10, "the orphaned tansu to die")
        wait_until(lambda: not accepts_connections(free_port), 10, "the port to close")


# --- the canonical-log partitioner -----------------------------------------------------


# From Apache Kafka's UtilsTest.testMurmur2 (Java's signed 32-bit results).
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("data", "java"), JAVA_MURMUR2.items())
def test_murmur2_matches_the_java_client(data: bytes, java: int) -> None:
    assert murmur2(data) == java & 0xFFFFFFFF


def _partitioner_topic(bootstrap: str, partitions: int) -> str:
    name = f"test.partitioner.{uuid.uuid4().hex}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1}})
        admin.wait_for_topics([name])
    finally:
        admin.close()
    return name


KEYS = [f"sub-{i:05d}" for i in range(200)] + ["۱۲۳۴", "ثبت-۷", "", "x" * 37]


def test_partition_for_agrees_with_kafka_python_producers(broker: str) -> None:
    partitions = 7
    topic = _partitioner_topic(broker, partitions)
    producer = KafkaProducer(bootstrap_servers=broker)
    try:
        futures = {k: producer.send(topic, key=k.encode(), value=b"v") for k in KEYS}
        placed = {k: f.get(timeout=60).partition for k, f in futures.items()}
    finally:
        producer.close()
    assert placed == {k: partition_for(k, partitions) for k in KEYS}


def test_partition_for_agrees_with_librdkafka_murmur2_producers(broker: str) -> None:
    partitions = 5
    topic = _partitioner_topic(broker, partitions)
    placed: dict[str, int] = {}

    def delivered(err: Any, msg: Any) -> None:
        assert err is None, err
        placed[msg.key().decode()] = msg.partition()

    producer = ConfluentProducer({"bootstrap.servers": broker, "partitioner": "murmur2"})
    for key in KEYS:
        producer.produce(topic, key=key.encode(), value=b"v", on_delivery=delivered)
    assert producer.flush(60) == 0
    assert placed == {k: partition_for(k, partitions) for k in KEYS}


def test_partition_for_is_stable_across_processes() -> None:
    # A different hash seed in another interpreter must not move any key.
    code = (
        "from sada.infra.topics import partition_for\n"
        f"print([partition_for(k, 4) for k in {KEYS!r}])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env=sada_env(PYTHONHASHSEED=seed),
            check=True,
            timeout=60,
        ).stdout
        for seed in ("1", "2")
    }
    assert outputs == {f"{[partition_for(k, 4) for k in KEYS]}\n"}


def test_partition_for_spreads_submission_ids() -> None:
    ids = [str(uuid.UUID(int=i * 7919 + 1)) for i in range(4000)]
    for partitions in (1, 4, 12):
        counts = Counter(partition_for(i, partitions) for i in ids)
        assert set(counts) == set(range(partitions))
        expected = len(ids) / partitions
        assert all(abs(c - expected) < 0.15 * expected for c in counts.values()), counts


def test_partition_for_rejects_zero_partitions() -> None:
    with pytest.raises(ValueError):
        partition_for("k", 0)

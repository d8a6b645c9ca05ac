"""Running Sada as its users run it, for the end-to-end tests.

``sada run`` and ``sada broker`` run as child processes of the test, with real
signals, exit codes, HTTP and Kafka. What the tests read back comes through
the same doors a user or an integrator has: the HTTP API, ``/metrics``, and
the topics themselves, read to the high watermark that fetch responses carry
(this broker's ListOffsets(latest) can stop short of a topic's end).

Imported by the ``test_e2e_*`` modules as a sibling module: ``tests/`` has no
``__init__.py``, so pytest's default import mode puts it on ``sys.path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka import KafkaProducer
from kafka_support import ApacheKafka
from prometheus_client.parser import text_string_to_metric_families

from sada.infra import topics
from sada.infra.broker import free_port as free_port  # re-exported for the tests
from sada.infra.reading import read_topic_to_end
from sada.pipeline.domain.logcodec import decode_raw, event_key
from sada.pipeline.domain.records import ForwardedEvent, OrderedRecord
from sada.pipeline.domain.tracking import new_tracking_code
from sada.producers.events import build_event

T = TypeVar("T")
INGRESS_GROUP = "sada-ingress"  # the default group's ingress members

# The console script installed beside the interpreter running the tests: what a user types.
SADA = str(Path(sys.executable).with_name("sada"))

# Short timers so that a test waits seconds, not the production defaults.
FAST_TIMERS = {
    "SADA_TICK_SECONDS": "0.5",
    "SADA_IDLE_SECONDS": "1",
    "SADA_GRACE_SECONDS": "2",
}

SOURCE = "/integrations/e2e"
UNIT = "univ.vc-student"  # a unit of the shipped configuration, below the root
PARENT_UNIT = "univ"

Position = tuple[str, int, int]  # topic, partition, offset


def clean_env(**settings: str) -> dict[str, str]:
    """The caller's environment without any ``SADA_*`` variable, plus ``settings``.

    A developer's own ``SADA_KAFKA_BOOTSTRAP`` or ``SADA_DATABASE_URL`` must not
    point a test's process at their infrastructure.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SADA_")}
    env.update(settings)
    return env


def wait_for(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    watch: SadaProcess | None = None,
    interval: float = 0.1,
) -> T:
    """Poll ``probe`` until it returns something truthy; that value.

    Fails after ``timeout`` seconds, or at once if the ``watch``ed process has
    exited (with its output, which says why).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if watch is not None and watch.poll() is not None:
            raise AssertionError(
                f"{watch.name} exited with {watch.poll()} while waiting for {what}\n"
                f"{watch.output()}"
            )
        if time.monotonic() > deadline:
            tail = f"\n{watch.output()}" if watch is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{tail}")
        time.sleep(interval)


# --- processes ------------------------------------------------------------------------


class SadaProcess:
    """One ``sada`` command running as a child process, its output kept in files."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str],
        workdir: Path,
    ) -> None:
        self.name = name
        self.argv = argv
        workdir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = workdir / f"{name}.stdout"
        self.stderr_path = workdir / f"{name}.stderr"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            # Its own session: a Ctrl-C meant for pytest does not reach it twice,
            # and the test alone decides which signal it gets.
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=dict(env),
                cwd=workdir,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def output(self) -> str:
        return (
            f"--- {self.name} stdout ---\n{self.stdout()}--- {self.name} stderr ---\n"
            + (self.stderr()[-4000:])
        )

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running {timeout:g}s later\n{self.output()}"
            ) from None

    def interrupt(self, timeout: float = 30) -> int:
        """Ctrl-C: SIGINT, then its exit code within ``timeout`` seconds."""
        self.proc.send_signal(signal.SIGINT)
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash or the out-of-memory killer would end it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)

    def close(self) -> None:
        """End it if it still runs (its broker child dies with it: parent-death signal)."""
        self.kill()


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes] | None:
    """``(status, body)`` of ``GET http://127.0.0.1:port/path``, or None if nothing answers."""
    # Percent-encoded as a browser or curl sends it (tracking codes may be typed in Persian).
    url = f"http://127.0.0.1:{port}{urllib.parse.quote(path, safe='/?=&')}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as e:
        return int(e.code), bytes(e.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def get_json(port: int, path: str) -> tuple[int, Any] | None:
    answer = http_get(port, path)
    if answer is None:
        return None
    status, body = answer
    return status, json.loads(body)


def healthz(port: int) -> dict[str, Any] | None:
    """The health document once it says ``"status": "ok"``, else None."""
    answer = get_json(port, "/healthz")
    if answer is None or answer[0] != 200 or answer[1].get("status") != "ok":
        return None
    body: dict[str, Any] = answer[1]
    return body


def wait_healthy(proc: SadaProcess, port: int, timeout: float = 60) -> dict[str, Any]:
    return wait_for(lambda: healthz(port), timeout, f"{proc.name} /healthz ok", watch=proc)


def start_run(
    workdir: Path,
    data_dir: Path,
    http_port: int,
    *,
    name: str = "sada-run",
    bootstrap: str | None = None,
    env: Mapping[str, str] | None = None,
    sada: str = SADA,
) -> SadaProcess:
    """``sada run --data-dir D --port P`` (``--bootstrap`` when given); not waited for."""
    argv = [sada, "run", "--data-dir", str(data_dir), "--port", str(http_port)]
    if bootstrap is not None:
        argv += ["--bootstrap", bootstrap]
    return SadaProcess(name, argv, env if env is not None else clean_env(**FAST_TIMERS), workdir)


# The broker matrix: the integration suites run on each of these.
BROKERS = ("tansu", "apache-kafka")


class Closable(Protocol):
    def close(self) -> None: ...


@dataclass
class KafkaNode:
    """An Apache Kafka node of a test's own, closed as a ``sada broker`` process is."""

    node: ApacheKafka

    def close(self) -> None:
        self.node.stop()


def start_named_broker(kind: str, workdir: Path) -> tuple[Closable, str]:
    """A broker of the matrix (``tansu``: ``sada broker``; ``apache-kafka``) for one test."""
    if kind == "tansu":
        return start_broker(workdir)
    if kind == "apache-kafka":
        node = ApacheKafka(workdir / "apache-kafka").start()
        return KafkaNode(node), node.bootstrap
    raise ValueError(f"no broker {kind!r}; one of {BROKERS}")


def start_broker(workdir: Path, env: Mapping[str, str] | None = None) -> tuple[SadaProcess, str]:
    """``sada broker --port P`` and its bootstrap address, once it says it is listening."""
    port = free_port()
    proc = SadaProcess(
        "sada-broker",
        [SADA, "broker", "--port", str(port)],
        env if env is not None else clean_env(),
        workdir,
    )
    expected = f"broker listening on 127.0.0.1:{port}"
    wait_for(lambda: expected in proc.stdout(), 60, expected, watch=proc)
    return proc, f"127.0.0.1:{port}"


# --- /proc -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    state: str
    cmdline: str


def processes() -> list[ProcInfo]:
    """Every process visible in /proc (zombies included, with state ``Z``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            raw = (entry / "cmdline").read_bytes()
        except OSError:  # it ended while we looked
            continue
        after = stat[stat.rindex(")") + 2 :].split()
        cmdline = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        found.append(ProcInfo(int(entry.name), int(after[1]), after[0], cmdline))
    return found


def descendants(pid: int) -> list[ProcInfo]:
    every = processes()
    result: list[ProcInfo] = []
    parents = {pid}
    while True:
        more = [p for p in every if p.ppid in parents and p not in result]
        if not more:
            return result
        result.extend(more)
        parents.update(p.pid for p in more)


def running(pids: Iterable[int]) -> list[ProcInfo]:
    """Those of ``pids`` that are still live processes (not zombies)."""
    wanted = set(pids)
    return [p for p in processes() if p.pid in wanted and p.state != "Z"]


# --- Kafka -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Mapping[str, str]


def read_topic(bootstrap: str, topic: str) -> list[Record]:
    """Every record of ``topic``, all partitions, from the beginning to the current end."""
    records: list[Record] = []

    def keep(_partition: int, m: Any) -> None:
        headers = {k: v.decode("utf-8", "replace") for k, v in (m.headers or ())}
        records.append(Record(m.topic, m.partition, m.offset, m.key, m.value, headers))

    asyncio.run(read_topic_to_end(bootstrap, topic, keep))
    return records


def log_events(bootstrap: str) -> list[dict[str, Any]]:
    """The CloudEvents forwarded to the canonical log, in partition and offset order.

    Watermarks and rejected inputs are left out; an event delivered twice is
    forwarded twice (the projector absorbs the second).
    """
    events = []
    for rec in sorted(read_topic(bootstrap, topics.LOG), key=lambda r: (r.partition, r.offset)):
        assert rec.value is not None, f"canonical-log record without a value at {rec}"
        raw = decode_raw(rec.value)
        if isinstance(raw, ForwardedEvent) or (
            isinstance(raw, OrderedRecord) and raw.event is not None
        ):
            events.append(raw.event)
    return events


def applied_key_counts(database: Path) -> Counter[str]:
    """How many times each event (``source`` + ``id``) took effect: the SQLite store's ledger."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        return Counter(key for (key,) in conn.execute("SELECT key FROM events"))


def log_key_counts(bootstrap: str) -> Counter[str]:
    """How many times each event (``source`` + ``id``) is in the canonical log."""
    return Counter(event_key(ce) for ce in log_events(bootstrap))


def committed_offsets(
    bootstrap: str, tps: Iterable[tuple[str, int]], group: str = INGRESS_GROUP
) -> dict[tuple[str, int], int]:
    """The offsets ``group`` has committed (0 where it has committed none)."""

    async def read() -> dict[tuple[str, int], int]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            result = {}
            for topic, partition in tps:
                offset = await consumer.committed(TopicPartition(topic, partition))
                result[(topic, partition)] = offset or 0
            return result
        finally:
            await consumer.stop()

    return asyncio.run(read())


def settled(bootstrap: str, ends: Mapping[tuple[str, int], int]) -> bool:
    """Whether ingress has settled every input up to ``ends`` (its commits reached them).

    Ingress commits an input offset only once that message is in the
    canonical log, in ``sada.dlq``, or absorbed as a duplicate.
    """
    committed = committed_offsets(bootstrap, ends)
    return all(committed[tp] >= end for tp, end in ends.items())


def decided(http_port: int) -> bool:
    """Whether the worker's projector has decided everything in the log and published it.

    Nothing left to apply or held back, every rejection on ``sada.dlq`` and every
    escalation on ``sada.escalations``.
    """
    h = healthz(http_port)
    if h is None:
        return False
    ingress, projector = h["workers"]["ingress"], h["workers"]["projector"]
    return (
        projector["lag"] == 0
        and ingress["buffered"] == 0
        and projector["dlq"] == ingress["rejected"]
        and projector["published"] >= projector["escalations"]
    )


class RawProducer:
    """A plain kafka-python producer: bytes to the topic the test names, as any client does.

    One request in flight, as an integrator that keeps its events in order sets it:
    with several, a batch retried after a broker restart lands behind later ones, and
    its events arrive after their partition's time has passed them (late, rightly).
    """

    def __init__(self, bootstrap: str) -> None:
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=5,
            max_request_size=4 * 1024 * 1024,
            max_in_flight_requests_per_connection=1,
        )
        self._pending: list[Any] = []

    def send(self, topic: str, value: bytes | None, key: bytes | None = None) -> None:
        self._pending.append(self._producer.send(topic, value=value, key=key))

    def flush(self) -> list[Position]:
        """Wait for every send since the last flush; their positions, in send order."""
        self._producer.flush()
        sent = [f.get(timeout=30) for f in self._pending]
        self._pending = []
        return [(m.topic, m.partition, m.offset) for m in sent]

    def close(self) -> None:
        self._producer.close()


def ends_of(positions: Iterable[Position]) -> dict[tuple[str, int], int]:
    """The end offset (last + 1) of every partition written to."""
    ends: dict[tuple[str, int], int] = {}
    for topic, partition, offset in positions:
        ends[(topic, partition)] = max(ends.get((topic, partition), 0), offset + 1)
    return ends


# --- /metrics --------------------------------------------------------------------------


def metric_sums(port: int) -> dict[str, float]:
    """Each sample name of ``/metrics`` summed over its labels (``_total`` names kept)."""
    answer = http_get(port, "/metrics")
    assert answer is not None and answer[0] == 200, f"/metrics answered {answer!r}"
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(answer[1].decode()):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


def metric_by_label(port: int, name: str, label: str) -> dict[str, float]:
    """Sample ``name`` of ``/metrics`` summed per value of ``label``."""
    answer = http_get(port, "/metrics")
    assert answer is not None and answer[0] == 200, f"/metrics answered {answer!r}"
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(answer[1].decode()):
        for sample in family.samples:
            if sample.name == name:
                value = sample.labels.get(label, "")
                sums[value] = sums.get(value, 0.0) + sample.value
    return sums


# --- events ----------------------------------------------------------------------------


class EventFactory:
    """Valid Sada events with unique ids and tracking codes, through the SDK's builder."""

    def __init__(self, seed: int, source: str = SOURCE) -> None:
        self.rng = random.Random(seed)
        self.source = source
        self._codes: set[str] = set()

    def tracking_code(self) -> str:
        while True:
            code = new_tracking_code(self.rng)
            if code not in self._codes:
                self._codes.add(code)
                return code

    def submission(
        self, time: datetime | None = None, unit: str = UNIT, kind: str = "suggestion"
    ) -> dict[str, Any]:
        n = len(self._codes)
        return build_event(
            "sada.submission.created",
            {
                "submission_id": f"sub-{uuid.UUID(int=self.rng.getrandbits(128), version=4)}",
                "tracking_code": self.tracking_code(),
                "kind": kind,
                "title": f"پیشنهاد شماره {n}",
                "body": "راه‌اندازی سامانه‌ای برای ثبت پیشنهادها و پیگیری آن‌ها با کد رهگیری.",
                "language": "fa",
                "channel": "telegram",
                "unit_id": unit,
                "author": {"id": f"stu-{self.rng.randrange(10**6)}", "role": "student"},
                "anonymous": False,
            },
            source=self.source,
            time=time,
            rng=self.rng,
        )

    def vote(
        self,
        submission_id: str,
        voter: str,
        stance: str = "support",
        time: datetime | None = None,
    ) -> dict[str, Any]:
        return build_event(
            "sada.vote.cast",
            {"submission_id": submission_id, "voter_id": voter, "stance": stance},
            source=self.source,
            time=time,
            rng=self.rng,
        )

    def retraction(
        self, submission_id: str, voter: str, time: datetime | None = None
    ) -> dict[str, Any]:
        return build_event(
            "sada.vote.retracted",
            {"submission_id": submission_id, "voter_id": voter},
            source=self.source,
            time=time,
            rng=self.rng,
        )

    def acknowledgement(
        self, submission_id: str, unit: str = UNIT, time: datetime | None = None
    ) -> dict[str, Any]:
        return build_event(
            "sada.response.posted",
            {
                "submission_id": submission_id,
                "response_id": f"resp-{self.rng.getrandbits(64):x}",
                "unit_id": unit,
                "kind": "acknowledgement",
                "body": "درخواست شما دریافت شد و در حال بررسی است.",
            },
            source=self.source,
            time=time,
            rng=self.rng,
        )

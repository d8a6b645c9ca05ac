"""Sada as it runs in production: several workers, Apache Kafka, PostgreSQL, and faults.

A smaller month of the traffic of ``test_e2e_decisions`` (60 submissions, 3,000
votes, with re-votes, retractions, responses, referrals, redeliveries), plus a
handful of invalid inputs, is published to the input topics; the answers are
checked against the same independent model of the rules (``domain_oracle``),
exactly, at the month's last instant:

- three workers in one group on Apache Kafka and PostgreSQL, one SIGKILLed
  mid-stream and never restarted: the survivors take over its partitions and
  decide the month as the model does, with one rejection per invalid input;
- one worker and three workers over the same history decide the same
  escalations, by id and instant;
- Apache Kafka SIGKILLed mid-stream and started again on its log directory;
- PostgreSQL stopped for 20 s mid-stream: ``/healthz`` says so, and nothing is lost;
- an event stamped 30 s ahead of the wall clock survives a clean stop and a
  SIGKILL, and takes effect once its time has come;
- the three-worker SIGKILL run again on the embedded broker (Tansu).

The PostgreSQL outage stops a server of the test's own (``initdb`` into a
temporary directory, on a port of its own): the shared server other tests use
stays up.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from domain_oracle import Model, replay
from e2e_support import (
    FAST_TIMERS,
    RawProducer,
    SadaProcess,
    clean_env,
    free_port,
    get_json,
    healthz,
    start_broker,
    start_run,
    wait_for,
)
from kafka_support import ApacheKafka
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool
from test_e2e_decisions import (
    CONFIG,
    END,
    LEDGER,
    T0,
    WORKER_ENV,
    RunResult,
    Scenario,
    _model_view,
    _value,
    assert_every_event_once_in_time,
    build_scenario,
    collect_run,
    ledger_size,
    settled_store,
)

from sada.consumers.store import SqlStore
from sada.consumers.tables import events as events_table
from sada.infra import topics
from sada.infra.signing import default_key_name, write_signer
from sada.infra.topics import ensure_topics
from sada.pipeline.domain.logcodec import decode_raw
from sada.pipeline.domain.model import format_time
from sada.pipeline.domain.note import Signer
from sada.pipeline.domain.records import ForwardedEvent, InputMark
from sada.producers.events import build_event, topic_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

PARTITIONS = 4
INPUT_PARTITIONS = [(t, p) for t in topics.INPUT_TOPICS for p in range(PARTITIONS)]
POSTGRES_URL = os.environ.get(
    "SADA_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)

Item = tuple[str, bytes, bytes | None]  # topic, value, key
Position = tuple[str, int, int]


# --- the month, and what is wrong in it -----------------------------------------------------


@dataclass
class Month:
    scenario: Scenario
    expected: dict[str, dict[str, Any]]  # submission id -> the model's view at END
    items: list[Item]  # what integrators publish, in order, invalid inputs among them
    bad: set[int] = field(default_factory=set)  # indices of the invalid inputs in ``items``


def _invalid_inputs(sc: Scenario, rng: random.Random) -> list[Item]:
    """Inputs ingress must refuse, each for another reason, each on a topic of Sada."""
    sid = next(iter(sc.codes))
    at = T0 + timedelta(days=3)

    def event(type_: str, data: dict[str, Any]) -> dict[str, Any]:
        return build_event(type_, data, source="/integrations/broken", time=at, rng=rng)

    vote = event("sada.vote.cast", {"submission_id": sid, "voter_id": "v-x", "stance": "support"})
    no_voter = event(
        "sada.vote.cast", {"submission_id": sid, "voter_id": "v-y", "stance": "oppose"}
    )
    del no_voter["data"]["voter_id"]
    maybe = event("sada.vote.cast", {"submission_id": sid, "voter_id": "v-z", "stance": "support"})
    maybe["data"]["stance"] = "maybe"
    stranger = event(
        "sada.response.posted",
        {
            "submission_id": sid,
            "response_id": "resp-nowhere",
            "unit_id": "univ.no-such-unit",
            "kind": "acknowledgement",
            "body": "—",
        },
    )
    key = sid.encode()
    return [
        (topics.VOTES, b'{"specversion": "1.0", "id": ', key),  # not JSON
        (topics.VOTES, _value(no_voter), key),  # schema: a required field missing
        (topics.VOTES, _value(maybe), key),  # schema: a stance that is not one
        (topics.RESPONSES, _value(stranger), key),  # a unit the organisation has not
        (topics.SUBMISSIONS, _value(vote), key),  # a vote on the submissions topic
    ]


def build_month(seed: int = 1406) -> Month:
    sc = build_scenario(seed, n_subs=60, n_votes=3000)
    model = Model.from_config(CONFIG)
    expected = {sid: _model_view(replay(model, h, END)) for sid, h in sc.histories.items()}
    items: list[Item] = [
        (topic_for(ce), _value(ce), ce["data"]["submission_id"].encode()) for ce in sc.published
    ]
    rng = random.Random(seed)
    bad = set()
    for item in _invalid_inputs(sc, rng):
        at = rng.randrange(len(items) // 10, len(items) * 9 // 10)
        items.insert(at, item)
        bad = {i + 1 if i >= at else i for i in bad} | {at}
    return Month(sc, expected, items, bad)


@pytest.fixture(scope="module")
def month() -> Month:
    return build_month()


def publish(producer: RawProducer, items: list[Item]) -> list[Position]:
    for topic, value, key in items:
        producer.send(topic, value, key)
    return producer.flush()


def assert_views(out: RunResult, month: Month) -> None:
    """Every submission as the model has it at END; the first differences, if any."""
    mismatched = {
        sid: (out.views[sid], want)
        for sid, want in month.expected.items()
        if out.views[sid] != want
    }
    lines = []
    for sid, (got, want) in list(mismatched.items())[:5]:
        for k in want:
            if got[k] != want[k]:
                lines.append(f"{sid} {k}:\n  pipeline {got[k]}\n  model    {want[k]}")
    assert not mismatched, f"{len(mismatched)} submissions differ:\n" + "\n".join(lines)
    stored = out.dump["escalations"]
    assert sum(len(v["escalations"]) for v in month.expected.values()) == len(stored)


def assert_escalations_published_once_each(out: RunResult) -> int:
    """Every stored escalation on ``sada.escalations``; one that a crash published
    twice is the same record twice. Returns how many were published twice."""
    by_id: dict[str, dict[str, Any]] = {}
    for e in out.escalations:
        assert by_id.setdefault(e["id"], e) == e, f"escalation {e['id']} published differently"
    assert set(by_id) == {row[0] for row in out.dump["escalations"]}
    return len(out.escalations) - len(by_id)


def assert_one_rejection_per_bad_input(out: RunResult, bad: list[Position]) -> None:
    """Each invalid input rejected once (the ledger), and on ``sada.dlq`` under its position."""
    rejections = out.dump["rejections"]  # key, partition, offset, src_topic, src_partition, ...
    sources = Counter((r[3], r[4], r[5]) for r in rejections)
    assert sources == Counter(bad), f"rejections by input: {sources}, invalid inputs at {bad}"
    on_dlq = Counter(out.dlq_sources)
    assert set(on_dlq) == set(bad), f"sada.dlq by input: {on_dlq}, invalid inputs at {bad}"
    twice = {pos: n for pos, n in on_dlq.items() if n != 1}
    assert not twice, f"inputs on sada.dlq more than once: {twice}"


def escalation_instants(out: RunResult) -> dict[str, tuple[Any, ...]]:
    """Escalation id -> (submission, instant, levels, units, reason, support, deadline)."""
    return {row[0]: tuple(row[1:]) for row in out.dump["escalations"]}


# --- PostgreSQL ----------------------------------------------------------------------------


def _as_postgres(argv: list[str]) -> list[str]:
    """A PostgreSQL server command run as the postgres user (the server refuses root)."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the server of ``server_url``; dropped afterwards."""
    name = f"sada_t_{uuid.uuid4().hex[:16]}"
    # No pool: a connection kept from before a server restart would be dead.
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()


class PrivatePostgres:
    """A throwaway PostgreSQL server of the test's own, to stop and start at will."""

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda b: int(b.parent.name))
        assert bins, "no PostgreSQL server under /usr/lib/postgresql"
        self.bin = bins[-1]
        # Under /var/tmp: the postgres user cannot enter root's pytest directories.
        self.root = Path(tempfile.mkdtemp(prefix="sada-pg-", dir="/var/tmp"))
        self.data = self.root / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        done = subprocess.run(
            _as_postgres([str(self.bin / argv[0]), *argv[1:]]),
            cwd="/",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"{argv[0]} failed: {done.stdout}{done.stderr}"

    def init(self) -> PrivatePostgres:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        return self

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = str(self.root / "postgres.log")
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", log, "-w", "-t", "60", "-o", options, "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "stop", "-m", mode)

    def running(self) -> bool:
        done = subprocess.run(
            _as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "status"]),
            cwd="/",
            capture_output=True,
        )
        return done.returncode == 0

    def destroy(self) -> None:
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


# --- workers ---------------------------------------------------------------------------------


@dataclass
class Workers:
    """``sada run`` processes of one group on one Kafka and one database."""

    workdir: Path
    bootstrap: str
    url: str
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[int, tuple[SadaProcess, int]] = field(default_factory=dict)
    killed: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        # One deployment, one signing key and one pseudonym key, whatever the worker:
        # a worker with keys of its own is refused, as it must be.
        key_file = self.workdir / "signing.key"
        if not key_file.exists():
            write_signer(key_file, Signer.generate(default_key_name("sada.localhost")))
        self.env = {
            "SADA_SIGNING_KEY_FILE": str(key_file),
            "SADA_PSEUDONYM_KEY": "the test deployments' pseudonym key",
            **self.env,
        }

    def start(self, i: int) -> SadaProcess:
        port = free_port()
        env = clean_env(**{**WORKER_ENV, "SADA_DATABASE_URL": self.url, **self.env})
        proc = start_run(
            self.workdir,
            self.workdir / f"data-{i}",
            port,
            name=f"sada-run-{i}",
            bootstrap=self.bootstrap,
            env=env,
        )
        self.procs[i] = (proc, port)
        return proc

    def alive(self) -> dict[int, tuple[SadaProcess, int]]:
        return {i: w for i, w in self.procs.items() if i not in self.killed}

    def kill(self, i: int) -> None:
        self.procs[i][0].kill()
        self.killed.add(i)

    def wait(
        self, probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.5
    ) -> Any:
        """``wait_for``, failing at once if a worker that should run has exited."""
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            for proc, _ in self.alive().values():
                if proc.poll() is not None:
                    raise AssertionError(
                        f"{proc.name} exited with {proc.poll()} waiting for {what}\n"
                        f"{proc.output()}\n{self.health_report()}"
                    )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:g}s waiting for {what}\n{self.health_report()}"
                )
            time.sleep(interval)

    def healths(self) -> dict[int, Any]:
        """Each running worker's /healthz document, whatever its status."""
        out = {}
        for i, (_, port) in self.alive().items():
            answer = get_json(port, "/healthz")
            out[i] = None if answer is None else answer[1]
        return out

    def health_report(self) -> str:
        lines = []
        for i, h in self.healths().items():
            if h is None:
                lines.append(f"worker {i}: no answer")
                continue
            lines.append(
                f"worker {i}: {h.get('status')} degraded={h.get('degraded')} "
                f"failure={h.get('failure')} clock={h.get('clock')} "
                f"workers={json.dumps(h.get('workers'), sort_keys=True)}"
            )
        return "\n".join(lines)

    def wait_healthy(self, timeout: float = 120) -> None:
        self.wait(
            lambda: all(healthz(port) for _, port in self.alive().values()),
            timeout,
            "every worker /healthz ok",
        )

    def owned(self) -> tuple[list[int], list[tuple[str, int]]] | None:
        """Log partitions and input partitions the running workers own, all ok; else None."""
        log_parts: list[int] = []
        inputs: list[tuple[str, int]] = []
        for _, port in self.alive().values():
            h = healthz(port)
            if h is None:
                return None
            log_parts += h["workers"]["projector"]["owned"]
            for name in h["workers"]["ingress"]["owned"]:
                topic, _, partition = name.rpartition("/")
                inputs.append((topic, int(partition)))
        return sorted(log_parts), sorted(inputs)

    def spread(self) -> bool:
        """Every running worker owns some log partitions, and all are owned once."""
        owned = self.owned()
        if owned is None:
            return False
        each = [healthz(port) for _, port in self.alive().values()]
        return (
            owned[0] == list(range(PARTITIONS))
            and owned[1] == sorted(INPUT_PARTITIONS)
            and all(h is not None and h["workers"]["projector"]["owned"] for h in each)
        )

    def covered(self) -> bool:
        owned = self.owned()
        return owned is not None and owned == (list(range(PARTITIONS)), sorted(INPUT_PARTITIONS))

    def stop(self) -> None:
        for proc, _ in self.alive().values():
            code = proc.interrupt(timeout=60)
            assert code == 0, proc.output()

    def close(self) -> None:
        for proc, _ in self.procs.values():
            proc.close()


@dataclass
class Run:
    out: RunResult
    bad: list[Position]  # where the invalid inputs went
    health: str  # the survivors' health at the end
    seconds: float


Fault = Callable[[Workers, Callable[[], None]], None]


def run_month(
    workdir: Path,
    bootstrap: str,
    url: str,
    month: Month,
    workers: int = 1,
    fault: Fault | None = None,
    first: float = 0.6,
    fault_after: float = 0.25,
    settle_timeout: float = 300,
) -> Run:
    """Publish the month to a fresh Kafka and decide it with ``workers`` workers.

    With a ``fault``: once ``first`` of the inputs are published and
    ``fault_after`` of the distinct events are in the ledger, ``fault(w, rest)``
    runs; it must call ``rest()`` (publishing the other inputs) itself.
    """
    ensure_topics(bootstrap, PARTITIONS)
    w = Workers(workdir, bootstrap, url)
    positions: list[Position] = []
    cut = int(len(month.items) * first) if fault is not None else len(month.items)

    def send(items: list[Item]) -> None:
        producer = RawProducer(bootstrap)
        try:
            positions.extend(publish(producer, items))
        finally:
            producer.close()

    try:
        for i in range(workers):
            w.start(i)
        w.wait_healthy()
        if workers > 1:
            w.wait(w.spread, 120, "the log partitions spread over every worker")
        began = time.monotonic()
        send(month.items[:cut])
        if fault is not None:
            want = int(month.scenario.unique * fault_after)
            w.wait(lambda: ledger_size(url) >= want, 120, f"{want} events applied", interval=0.05)
            fault(w, lambda: send(month.items[cut:]))
        assert len(positions) == len(month.items)
        w.wait(
            lambda: settled_store(bootstrap, url, PARTITIONS), settle_timeout, "the month decided"
        )
        seconds = time.monotonic() - began
        w.wait(w.covered, 60, "every partition owned by a running worker")
        health = w.health_report()
        w.stop()
        out = collect_run(bootstrap, url, month.scenario)
    finally:
        w.close()
    return Run(out, [positions[i] for i in sorted(month.bad)], health, seconds)


def late_events(out: RunResult) -> list[dict[str, Any]]:
    """Ledger rows of events that took effect at another instant than their own."""
    rows = [dict(zip(LEDGER, r, strict=True)) for r in out.dump["events"]]
    return [r for r in rows if r["late"] or r["at"] != r["time"]]


def diagnose_late(out: RunResult, late: list[dict[str, Any]]) -> str:
    """What the projector knew when the first late event came: the watermarks before it.

    Walks the event's log partition up to it, keeping each input partition's last
    report (time, idle, the writer's wall clock), and names the mark that moved
    the clock past the event's time.
    """
    if not late:
        return ""
    first = min(late, key=lambda r: (r["partition"], r["offset"]))
    reports: dict[tuple[str, int], tuple[Any, bool, Any]] = {}
    passed = None
    src = None
    for partition, offset, raw in out.log:
        if partition != first["partition"] or offset > first["offset"]:
            continue
        rec = decode_raw(raw)
        if isinstance(rec, InputMark):
            for m in rec.inputs:
                reports[(m.topic, m.partition)] = (m.time, m.idle, rec.wall)
            active = [t for t, idle, _ in reports.values() if not idle and t is not None]
            if passed is None and active and format_time(min(active)) > first["time"]:
                passed = (offset, rec.wall, dict(reports))
        elif isinstance(rec, ForwardedEvent) and offset == first["offset"]:
            src = rec.src
    lines = [f"first late event: {first}", f"  read from input {src}"]
    if src is not None:
        lines.append(f"  its input partition's last report before it: {reports.get(src[:2])}")
    if passed is not None:
        lines.append(
            f"  the clock passed its time at log offset {passed[0]} (mark written {passed[1]})"
        )
        for tp, (t, idle, wall) in sorted(passed[2].items()):
            lines.append(f"    {tp[0]}/{tp[1]}: time={t} idle={idle} reported={wall}")
    return "\n".join(lines)


def assert_decided_exactly(run: Run, month: Month) -> int:
    """The oracle's answers, every event once and in time, one rejection per bad input."""
    out = run.out
    late = late_events(out)
    try:
        assert_views(out, month)
    except AssertionError as e:
        raise AssertionError(
            f"{e}\n{len(late)} events late: {late[:3]}\n{diagnose_late(out, late)}\n"
            f"health at the end:\n{run.health}"
        ) from None
    assert_every_event_once_in_time(out, month.scenario, rejected=len(run.bad))
    assert_one_rejection_per_bad_input(out, run.bad)
    return assert_escalations_published_once_each(out)


def kill_one_worker(victim: int) -> Fault:
    def fault(w: Workers, rest: Callable[[], None]) -> None:
        w.kill(victim)
        rest()  # integrators publish on

    return fault


# --- the tests ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_worker(month: Month, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """One worker on Apache Kafka and PostgreSQL, undisturbed: the reference run."""
    workdir = tmp_path_factory.mktemp("one-worker")
    with ApacheKafka(workdir / "kafka") as node, fresh_database(POSTGRES_URL) as url:
        yield run_month(workdir, node.bootstrap, url, month)


@pytest.mark.timeout(600)
def test_three_workers_one_killed_decide_as_the_model(
    month: Month, one_worker: Run, kafka_broker_factory: Callable[[], ApacheKafka], tmp_path: Path
) -> None:
    """SIGKILL one of three workers mid-stream, never restarted: the survivors finish the month."""
    node = kafka_broker_factory()
    with fresh_database(POSTGRES_URL) as url:
        run = run_month(tmp_path, node.bootstrap, url, month, workers=3, fault=kill_one_worker(1))
    twice = assert_decided_exactly(run, month)
    assert escalation_instants(run.out) == escalation_instants(one_worker.out)
    print(f"three workers, one killed: {run.seconds:.1f}s, {twice} escalations published twice")


@pytest.mark.timeout(600)
def test_one_worker_and_three_decide_the_same_escalations(
    month: Month, one_worker: Run, kafka_broker_factory: Callable[[], ApacheKafka], tmp_path: Path
) -> None:
    """The same history, one worker or three: the same escalations, ids and instants."""
    node = kafka_broker_factory()
    with fresh_database(POSTGRES_URL) as url:
        three = run_month(tmp_path, node.bootstrap, url, month, workers=3)
    assert_decided_exactly(one_worker, month)
    assert_decided_exactly(three, month)
    assert escalation_instants(three.out) == escalation_instants(one_worker.out)
    assert {e["id"] for e in three.out.escalations} == {e["id"] for e in one_worker.out.escalations}
    for table in ("submissions", "votes", "responses", "escalations"):
        assert three.out.dump[table] == one_worker.out.dump[table], table
    print(f"one worker {one_worker.seconds:.1f}s, three workers {three.seconds:.1f}s")


@pytest.mark.timeout(600)
def test_kafka_killed_and_restarted_mid_stream_loses_nothing(
    month: Month, one_worker: Run, kafka_broker_factory: Callable[[], ApacheKafka], tmp_path: Path
) -> None:
    """kill -9 of the broker mid-stream, started again on the same log directory."""
    node = kafka_broker_factory()

    def fault(w: Workers, rest: Callable[[], None]) -> None:
        node.kill()
        time.sleep(5)
        node.start()
        rest()

    with fresh_database(POSTGRES_URL) as url:
        run = run_month(tmp_path, node.bootstrap, url, month, fault=fault)
    assert_decided_exactly(run, month)
    assert escalation_instants(run.out) == escalation_instants(one_worker.out)


@pytest.mark.timeout(600)
def test_postgres_stopped_for_20_seconds_loses_nothing(
    month: Month, one_worker: Run, kafka_broker_factory: Callable[[], ApacheKafka], tmp_path: Path
) -> None:
    """The database away for 20 s mid-stream: /healthz says so, then ok; the month is whole."""
    node = kafka_broker_factory()
    pg = PrivatePostgres().init()
    seen: list[tuple[float, int | None, str | None]] = []  # when, HTTP status, health status

    def fault(w: Workers, rest: Callable[[], None]) -> None:
        (_, port) = w.alive()[0]
        pg.stop("fast")
        began = time.monotonic()
        try:
            rest()  # integrators publish on; Kafka holds it
            while time.monotonic() - began < 20:
                answer = get_json(port, "/healthz")
                seen.append(
                    (
                        time.monotonic() - began,
                        None if answer is None else answer[0],
                        None if answer is None else answer[1].get("status"),
                    )
                )
                time.sleep(0.5)
        finally:
            pg.start()
        w.wait(lambda: healthz(port), 90, "/healthz ok again after the outage")

    try:
        pg.start()
        with fresh_database(pg.url) as url:
            run = run_month(tmp_path, node.bootstrap, url, month, fault=fault)
    finally:
        pg.destroy()
    statuses = Counter(s for _, _, s in seen)
    assert statuses["degraded"] + statuses["failing"] > 0, f"/healthz during the outage: {seen}"
    assert all(code == 503 for _, code, s in seen if s in ("degraded", "failing")), seen
    assert_decided_exactly(run, month)
    assert escalation_instants(run.out) == escalation_instants(one_worker.out)
    print(f"/healthz during the outage: {dict(statuses)}")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stop", ["SIGINT", "SIGKILL"])
def test_an_event_ahead_of_the_wall_clock_survives_a_stop(stop: str, tmp_path: Path) -> None:
    """Accepted 30 s ahead of the wall clock, held, the worker stopped: after restart it
    takes effect once its time has come, not before, and not late."""
    from e2e_support import EventFactory, applied_key_counts

    broker, bootstrap = start_broker(tmp_path)
    data = tmp_path / "data"
    env = clean_env(**FAST_TIMERS, SADA_CLOCK="wall", SADA_PARTITIONS=str(PARTITIONS))
    worker: SadaProcess | None = None
    try:
        port = free_port()
        worker = start_run(tmp_path, data, port, name="sada-run-1", bootstrap=bootstrap, env=env)
        wait_for(lambda: healthz(port), 90, "/healthz ok", watch=worker)
        factory = EventFactory(seed=30)
        now = datetime.now(UTC)
        created = factory.submission(time=now - timedelta(seconds=1))
        sid = created["data"]["submission_id"]
        ahead = now + timedelta(seconds=30)
        vote = factory.vote(sid, "voter-ahead", time=ahead)
        producer = RawProducer(bootstrap)
        try:
            for ce in (created, vote):
                producer.send(topic_for(ce), _value(ce), sid.encode())
            producer.flush()
        finally:
            producer.close()
        db = data / "sada.db"
        key = f"{vote['source']} {vote['id']}"
        created_key = f"{created['source']} {created['id']}"
        wait_for(lambda: created_key in applied_key_counts(db), 30, "the submission", watch=worker)
        # Held, not applied, not rejected: wait until ingress has surely forwarded it.
        time.sleep(3)
        assert key not in applied_key_counts(db)
        with SqlStore(f"sqlite:///{db}") as store:
            assert not store.dump()["rejections"]
        if stop == "SIGINT":
            assert worker.interrupt(timeout=60) == 0, worker.output()
        else:
            worker.kill()
        assert datetime.now(UTC) < ahead - timedelta(seconds=5), "stopped too late to tell"
        port = free_port()
        worker = start_run(tmp_path, data, port, name="sada-run-2", bootstrap=bootstrap, env=env)
        wait_for(lambda: healthz(port), 90, "/healthz ok after the restart", watch=worker)
        assert key not in applied_key_counts(db), "took effect before its time"
        wait_for(lambda: key in applied_key_counts(db), 90, "the vote, in time", watch=worker)
        assert datetime.now(UTC) >= ahead
        with SqlStore(f"sqlite:///{db}") as store:
            rows = {r[0]: r for r in store.dump()["events"]}
            s = store.submission_by_code(created["data"]["tracking_code"])
        assert applied_key_counts(db)[key] == 1
        at = [c.name for c in events_table.c]
        row = dict(zip(at, rows[key], strict=True))
        assert (row["late"], row["at"], row["time"]) == (0, vote["time"], vote["time"]), row
        assert s is not None and s["support"] == 1
        assert worker.interrupt(timeout=60) == 0, worker.output()
    finally:
        if worker is not None:
            worker.close()
        broker.close()


@pytest.mark.timeout(600)
def test_three_workers_one_killed_on_the_embedded_broker(
    month: Month, one_worker: Run, tmp_path: Path
) -> None:
    """The three-worker SIGKILL run, on Tansu."""
    broker, bootstrap = start_broker(tmp_path)
    try:
        with fresh_database(POSTGRES_URL) as url:
            run = run_month(tmp_path, bootstrap, url, month, workers=3, fault=kill_one_worker(2))
    finally:
        broker.close()
    twice = assert_decided_exactly(run, month)
    assert escalation_instants(run.out) == escalation_instants(one_worker.out)
    print(f"Tansu, three workers, one killed: {run.seconds:.1f}s, {twice} published twice")

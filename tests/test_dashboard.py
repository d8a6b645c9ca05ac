"""The operations view as an operator sees it: SLA status, the units' ranking, the dashboard page.

One week of a university's traffic (``scenario``) is the common ground:

- on a store filled by the real projector, SLA status follows the pipeline
  clock to the microsecond and the units' ranking comes out as the domain
  rules say (SQLite and PostgreSQL alike);
- through a running ``sada run`` (a child process, event clock, its own
  embedded broker), ``/dashboard`` rendered by headless Chromium (Debian's
  ``chromium`` package) shows exactly the numbers ``/metrics`` exports, in
  Persian, right to left, and in English. A screenshot is left in
  ``test-artifacts/dashboard.png``.

Expected SLA states come from the reference model in ``domain_oracle`` (its
own business-time arithmetic), never from the code under test.
"""

from __future__ import annotations

import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import domain_oracle as oracle
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from sada.consumers.snapshot import build_snapshot, unit_ranking
from sada.consumers.store import SqlStore
from sada.infra.broker import free_port
from sada.pipeline.domain.config import Config, load_config
from sada.pipeline.domain.logcodec import encode_event, encode_tick
from sada.pipeline.domain.model import parse_time
from sada.pipeline.domain.projector import Projector
from sada.pipeline.domain.rules import Rules
from sada.producers.events import build_event, topic_for

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
SADA = [sys.executable, "-m", "sada.app.cli"]
TEHRAN = ZoneInfo("Asia/Tehran")
SOURCE = "/integrations/portal"
POSTGRES_URL = os.environ.get(
    "SADA_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
CONFIG = load_config()
STATUSES = ("on_time", "at_risk", "overdue")


def tehran(day: int, hour: int, minute: int = 0) -> datetime:
    """An instant of the week of Saturday 16 May 2026 (no holidays), Tehran time, as UTC."""
    local = datetime(2026, 5, 16, hour, minute, tzinfo=TEHRAN) + timedelta(days=day)
    return local.astimezone(UTC)


SAT, SUN, MON, TUE, WED = range(5)


# -- the scenario -----------------------------------------------------------------------


@dataclass
class Scenario:
    """CloudEvents to publish, and the same history for the reference model."""

    events: list[dict[str, Any]] = field(default_factory=list)
    histories: dict[str, list[tuple[datetime, oracle.Event]]] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)  # scenario name -> submission id
    rejected: int = 0
    rng: random.Random = field(default_factory=lambda: random.Random(4))

    @property
    def clock(self) -> datetime:
        """Where the event clock ends: the latest event time."""
        return max(parse_time(e["time"]) for e in self.events)

    def _add(self, type_: str, data: dict[str, Any], at: datetime) -> dict[str, Any]:
        event_id = str(uuid.UUID(int=self.rng.getrandbits(128)))
        event = build_event(type_, data, source=SOURCE, event_id=event_id, time=at, rng=self.rng)
        self.events.append(event)
        return event

    def _model(self, sid: str, at: datetime, model: oracle.Event) -> None:
        self.histories.setdefault(sid, []).append((at, model))

    def create(self, name: str, kind: str, unit: str, at: datetime) -> str:
        data = {
            "kind": kind,
            "title": "تأخیر در پاسخ‌گویی به درخواست‌های دانشجویان",
            "body": "سيستم ثبت نام كار نمي‌كند؛ شماره پیگیری قبلی ۷۸۱۶۸۳۸ بود و پاسخی نیامد.",
            "language": "fa",
            "channel": "web",
            "unit_id": unit,
            "author": {"id": f"author-{name}", "role": "student"},
            "anonymous": False,
        }
        event = self._add("sada.submission.created", data, at)
        sid = str(event["data"]["submission_id"])
        self.ids[name] = sid
        self._model(sid, at, oracle.Create(_key(event), kind, unit))
        return sid

    def create_rejected(self, unit: str, at: datetime) -> None:
        """A submission addressed to a unit the organisation does not have."""
        data = {
            "kind": "question",
            "title": "پرسش",
            "body": "واحد اشتباه",
            "language": "fa",
            "channel": "sms",
            "unit_id": unit,
            "author": {"id": "author-x", "role": "citizen"},
            "anonymous": True,
        }
        self._add("sada.submission.created", data, at)
        self.rejected += 1

    def respond(
        self, name: str, unit: str, kind: str, at: datetime, referred_to: str | None = None
    ) -> None:
        sid = self.ids[name]
        data: dict[str, Any] = {
            "submission_id": sid,
            "response_id": f"r-{name}-{kind}",
            "unit_id": unit,
            "kind": kind,
            "body": "موضوع بررسی شد.",
        }
        if referred_to:
            data["referred_to_unit_id"] = referred_to
        event = self._add("sada.response.posted", data, at)
        self._model(sid, at, oracle.Respond(_key(event), unit, kind, referred_to))

    def rate(self, name: str, rating: int, at: datetime) -> None:
        sid = self.ids[name]
        event = self._add("sada.satisfaction.rated", {"submission_id": sid, "rating": rating}, at)
        self._model(sid, at, oracle.Rate(_key(event), rating))

    def withdraw(self, name: str, at: datetime) -> None:
        sid = self.ids[name]
        event = self._add("sada.submission.withdrawn", {"submission_id": sid}, at)
        self._model(sid, at, oracle.Withdraw(_key(event)))

    def vote(self, name: str, voter: str, at: datetime) -> None:
        sid = self.ids[name]
        data = {"submission_id": sid, "voter_id": voter, "stance": "support"}
        event = self._add("sada.vote.cast", data, at)
        self._model(sid, at, oracle.Vote(_key(event), voter, "support"))

    def in_time_order(self) -> list[dict[str, Any]]:
        return sorted(self.events, key=lambda e: parse_time(e["time"]))


def _key(event: dict[str, Any]) -> str:
    return f"{event['source']} {event['id']}"


def scenario() -> Scenario:
    """Saturday 08:00 to Monday 10:00 at a university (default calendar: 8 business hours a day).

    - ``a``: complaint to Food Services, never answered: its 16-hour first
      response deadline (Sunday 16:00) escalates it to the Vice-Chancellery
      for Student Affairs, where it is on time;
    - ``b``: complaint to Food Services, answered after 2 business hours, rated 4;
    - ``c``: question to the Girls' Dormitory, acknowledged after 4 hours: only
      its 40-hour resolution clock runs (16 hours by Monday 10:00: on time);
    - ``d``: complaint to the Girls' Dormitory, Saturday 13:00, unanswered: 13
      business hours by Monday 10:00, past 80% of 16: at risk;
    - ``e``: suggestion to the Emergency Department, referred after 2 hours to
      Food Services (on time there);
    - ``f``: criticism to the Emergency Department, rejected after 1 hour, rated 2;
    - ``g``: question to the Department of Anatomy, withdrawn;
    - ``root``: complaint to the President's Office, unanswered: overdue, and
      at the root of the tree it stays there;
    - one submission to a unit that does not exist: rejected;
    - a vote at Monday 10:00 brings the event clock there.
    """
    s = Scenario()
    s.create("a", "complaint", "univ.food", tehran(SAT, 8))
    s.create("root", "complaint", "univ", tehran(SAT, 8))
    s.create("e", "suggestion", "univ.hospital-a.emergency", tehran(SAT, 8, 30))
    s.create("b", "complaint", "univ.food", tehran(SAT, 9))
    s.create("c", "question", "univ.dormitories.girls", tehran(SAT, 10))
    s.respond("e", "univ.hospital-a.emergency", "referral", tehran(SAT, 10, 30), "univ.food")
    s.respond("b", "univ.food", "answer", tehran(SAT, 11))
    s.rate("b", 4, tehran(SAT, 12))
    s.create("d", "complaint", "univ.dormitories.girls", tehran(SAT, 13))
    s.respond("c", "univ.dormitories.girls", "acknowledgement", tehran(SAT, 14))
    s.create("f", "criticism", "univ.hospital-a.emergency", tehran(SUN, 9))
    s.respond("f", "univ.hospital-a.emergency", "rejection", tehran(SUN, 10))
    s.rate("f", 2, tehran(SUN, 11))
    s.create("g", "question", "univ.fac-medicine.anatomy", tehran(MON, 9))
    s.withdraw("g", tehran(MON, 9, 30))
    s.create_rejected("univ.nowhere", tehran(MON, 9, 45))
    s.vote("c", "voter-1", tehran(MON, 10))
    return s


# -- what the rules say -------------------------------------------------------------------


class _Tracked(oracle.Submission):
    """The reference model's submission, remembering when it reached its current unit."""

    arrived: datetime

    def _arrive(self, unit: str, at: datetime) -> None:
        super()._arrive(unit, at)
        self.arrived = at


def expected_status(
    history: list[tuple[datetime, oracle.Event]], clock: datetime, config: Config = CONFIG
) -> tuple[str, str, str] | None:
    """(unit, kind, SLA status) of one submission at ``clock``, or None if not open."""
    model = oracle.Model.from_config(config)
    sub = _Tracked(model)
    for at, event in history:
        sub.apply(at, event)
    sub.run_clock(clock)
    o = sub.out
    if o.status != "open":
        return None
    if o.first_response_overdue or o.resolution_overdue:
        return (o.unit, sub.kind, "overdue")
    sla = model.sla[sub.kind]
    for due, hours in (
        (o.first_response_due, sla.first_response_hours),
        (o.resolution_due, sla.resolution_hours),
    ):
        if due is not None and model.calendar.add_hours(sub.arrived, 0.8 * hours) <= clock:
            return (o.unit, sub.kind, "at_risk")
    return (o.unit, sub.kind, "on_time")


def expected_open(scn: Scenario, clock: datetime | None = None) -> dict[tuple[str, str], int]:
    """Open submissions by (unit, status) at ``clock`` (default: the scenario's end)."""
    out: dict[tuple[str, str], int] = {}
    for history in scn.histories.values():
        found = expected_status(history, clock or scn.clock)
        if found is not None:
            key = (found[0], found[2])
            out[key] = out.get(key, 0) + 1
    return out


def open_by_unit(by_status: dict[tuple[str, str], int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for (unit, _status), n in by_status.items():
        out[unit] = out.get(unit, 0) + n
    return out


# -- stores filled by the real projector ----------------------------------------------------


@pytest.fixture(scope="module")
def postgres_admin() -> Iterator[Engine]:
    engine = create_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as e:
        engine.dispose()
        pytest.fail(
            f"PostgreSQL at {POSTGRES_URL} is unreachable ({type(e).__name__}); start it "
            "or point SADA_TEST_POSTGRES_URL at a server where this role may create schemas",
            pytrace=False,
        )
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'sada.db'}"
    else:
        admin: Engine = request.getfixturevalue("postgres_admin")
        schema = f"sada_test_{uuid.uuid4().hex}"
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = (
            make_url(POSTGRES_URL)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
    s = SqlStore(url)
    s.migrate()
    yield s
    s.close()
    if schema is not None:
        with request.getfixturevalue("postgres_admin").begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


class Log:
    """One canonical-log partition applied by the real projector to a store."""

    def __init__(self, store: SqlStore) -> None:
        self.rules = Rules.from_config(CONFIG)
        self.projector = Projector(self.rules, store, 0)
        self.offset = 0

    def feed(self, events: list[dict[str, Any]], tick: datetime | None = None) -> None:
        records = []
        for e in sorted(events, key=lambda e: parse_time(e["time"])):
            if e["data"].get("unit_id", "univ") not in CONFIG.units:
                continue  # ingress rejects it: it never reaches the log
            records.append(
                (self.offset, encode_event(e, parse_time(e["time"]), False, topic_for(e)))
            )
            self.offset += 1
        if tick is not None:
            records.append((self.offset, encode_tick(tick)))
            self.offset += 1
        self.projector.apply_batch(records)


def statuses_at(store: SqlStore, clock: datetime) -> dict[tuple[str, str], int]:
    snapshot = build_snapshot(store, Rules.from_config(CONFIG), clock)
    out: dict[tuple[str, str], int] = {}
    for (unit, _kind, status), n in snapshot.open_submissions.items():
        out[(unit, status)] = out.get((unit, status), 0) + n
    return out


def test_at_risk_and_overdue_follow_the_pipeline_clock(store: SqlStore) -> None:
    s = Scenario()
    s.create("late", "complaint", "univ.food", tehran(SAT, 8))
    Log(store).feed(s.events)
    # 8 business hours on Saturday, 4.8 on Sunday: 80% of 16 is reached at Sunday 12:48.
    eighty = tehran(SUN, 12, 48)
    due = tehran(SUN, 16)
    assert statuses_at(store, eighty - timedelta(microseconds=1)) == {("univ.food", "on_time"): 1}
    assert statuses_at(store, eighty) == {("univ.food", "at_risk"): 1}
    # Deadlines fire strictly after their instant.
    assert statuses_at(store, due) == {("univ.food", "at_risk"): 1}
    # Passed but not yet applied by the projector: overdue already.
    after = due + timedelta(microseconds=1)
    assert statuses_at(store, after) == {("univ.food", "overdue"): 1}
    # (The rules would have moved it up by then; the projector has not applied that yet.)
    for clock in (eighty - timedelta(microseconds=1), eighty, due):
        assert statuses_at(store, clock) == expected_open(s, clock)


def test_escalated_and_acknowledged_submissions_restart_and_stop_clocks(store: SqlStore) -> None:
    s = Scenario()
    s.create("late", "complaint", "univ.food", tehran(SAT, 8))
    s.create("asked", "question", "univ.dormitories.girls", tehran(SAT, 10))
    s.respond("asked", "univ.dormitories.girls", "acknowledgement", tehran(SAT, 11))
    log = Log(store)
    # The tick passes Food Services' deadline: the complaint moves up and starts afresh.
    log.feed(s.events, tick=tehran(MON, 10))
    assert statuses_at(store, tehran(MON, 10)) == {
        ("univ.vc-student", "on_time"): 1,
        ("univ.dormitories.girls", "on_time"): 1,
    }
    # Only the question's resolution clock runs: 80% of 40 hours is Wednesday 10:00.
    before, at = tehran(WED, 10) - timedelta(microseconds=1), tehran(WED, 10)
    girls = ("univ.dormitories.girls", "on_time"), ("univ.dormitories.girls", "at_risk")
    assert [statuses_at(store, before).get(k, 0) for k in girls] == [1, 0]
    assert [statuses_at(store, at).get(k, 0) for k in girls] == [0, 1]
    assert statuses_at(store, tehran(MON, 10)) == expected_open(s, tehran(MON, 10))
    for clock in (before, at):
        assert [expected_open(s, clock).get(k, 0) for k in girls] == [
            statuses_at(store, clock).get(k, 0) for k in girls
        ]


def test_snapshot_of_the_week_matches_the_rules(store: SqlStore) -> None:
    s = scenario()
    Log(store).feed(s.events, tick=s.clock)
    snapshot = build_snapshot(store, Rules.from_config(CONFIG), s.clock)
    expected = expected_open(s)
    assert statuses_at(store, s.clock) == expected
    assert snapshot.at_risk == {u: n for (u, st), n in expected.items() if st == "at_risk"}
    assert snapshot.overdue == {u: n for (u, st), n in expected.items() if st == "overdue"}
    assert snapshot.closed_submissions == {
        ("univ.food", "complaint"): 1,
        ("univ.hospital-a.emergency", "criticism"): 1,
    }
    assert snapshot.pipeline_clock_seconds == s.clock.timestamp()


# What the week means for each unit, by the rules of unit_ranking's docstring.
EXPECTED_RANKING = [
    # Emergency: e referred after 2 h, f rejected after 1 h: both in time, median 1.5 h.
    {
        "unit_id": "univ.hospital-a.emergency",
        "received": 2,
        "first_responses_in_time": 2,
        "first_responses_late": 0,
        "in_time_ratio": 1.0,
        "median_first_response_hours": 1.5,
        "satisfaction_mean": 2.0,
        "ratings": 1,
        "escalations_away": 0,
        "overdue_escalations_away": 0,
    },
    # Girls' Dormitory: c acknowledged after 4 h; d still within its deadline.
    {
        "unit_id": "univ.dormitories.girls",
        "received": 2,
        "first_responses_in_time": 1,
        "first_responses_late": 0,
        "in_time_ratio": 1.0,
        "median_first_response_hours": 4.0,
        "satisfaction_mean": None,
        "ratings": 0,
        "escalations_away": 0,
        "overdue_escalations_away": 0,
    },
    # Food Services: b answered after 2 h; a lost to its deadline; e arrived, not due yet.
    {
        "unit_id": "univ.food",
        "received": 3,
        "first_responses_in_time": 1,
        "first_responses_late": 1,
        "in_time_ratio": 0.5,
        "median_first_response_hours": 2.0,
        "satisfaction_mean": 4.0,
        "ratings": 1,
        "escalations_away": 1,
        "overdue_escalations_away": 1,
    },
    # The President's Office: its complaint is overdue, unanswered.
    {
        "unit_id": "univ",
        "received": 1,
        "first_responses_in_time": 0,
        "first_responses_late": 1,
        "in_time_ratio": 0.0,
        "median_first_response_hours": None,
        "satisfaction_mean": None,
        "ratings": 0,
        "escalations_away": 0,
        "overdue_escalations_away": 0,
    },
    # Nothing decided yet: g was withdrawn; a reached Student Affairs on Sunday 16:00.
    {
        "unit_id": "univ.fac-medicine.anatomy",
        "received": 1,
        "first_responses_in_time": 0,
        "first_responses_late": 0,
        "in_time_ratio": None,
        "median_first_response_hours": None,
        "satisfaction_mean": None,
        "ratings": 0,
        "escalations_away": 0,
        "overdue_escalations_away": 0,
    },
    {
        "unit_id": "univ.vc-student",
        "received": 1,
        "first_responses_in_time": 0,
        "first_responses_late": 0,
        "in_time_ratio": None,
        "median_first_response_hours": None,
        "satisfaction_mean": None,
        "ratings": 0,
        "escalations_away": 0,
        "overdue_escalations_away": 0,
    },
]


def test_units_are_ranked_on_answering_in_time(store: SqlStore) -> None:
    s = scenario()
    Log(store).feed(s.events, tick=s.clock)
    ranking = unit_ranking(store, Rules.from_config(CONFIG))
    assert [r.pop("position") for r in ranking] == list(range(1, len(EXPECTED_RANKING) + 1))
    assert ranking == EXPECTED_RANKING


def test_a_unit_visited_twice_is_judged_on_each_visit(store: SqlStore) -> None:
    s = Scenario()
    s.create("x", "complaint", "univ.food", tehran(SAT, 8))
    s.respond("x", "univ.food", "referral", tehran(SAT, 9), "univ.dormitories")
    s.respond("x", "univ.dormitories", "referral", tehran(SAT, 10), "univ.food")
    # Back at Food Services from Saturday 10:00, unanswered: that visit's 16-hour
    # deadline (Monday 10:00) escalates it to Student Affairs.
    Log(store).feed(s.events, tick=tehran(MON, 14))
    rows = {r["unit_id"]: r for r in unit_ranking(store, Rules.from_config(CONFIG))}
    assert rows["univ.food"]["received"] == 2
    assert rows["univ.food"]["first_responses_in_time"] == 1
    assert rows["univ.food"]["first_responses_late"] == 1
    assert rows["univ.dormitories"]["received"] == 1
    assert rows["univ.dormitories"]["first_responses_in_time"] == 1
    assert rows["univ.vc-student"]["received"] == 1


# -- sada run, as a child process -----------------------------------------------------------


class LiveSada:
    """``sada run`` as a child process: event clock, ticks twice a second, its own data and port."""

    def __init__(self, tmp: Path, **env: str) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.data_dir = tmp / "sada-data"
        self.log_path = tmp / "sada-run.log"
        # No SADA_* of the caller's: a developer's own broker or database stays out of it.
        environ = {k: v for k, v in os.environ.items() if not k.startswith("SADA_")}
        environ.update(
            SADA_CLOCK="event",
            SADA_TICK_SECONDS="0.5",
            SADA_IDLE_SECONDS="1",
            SADA_DATA_DIR=str(self.data_dir),
            SADA_HTTP_PORT=str(self.port),
            **env,
        )
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [*SADA, "run"],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=tmp,
            env=environ,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        first = self._first_line(timeout=120)
        m = re.search(r"\(broker (\S+) embedded", first)
        assert m, f"sada run's first line names no embedded broker: {first!r}"
        self.broker = m.group(1)
        self.url = f"http://127.0.0.1:{self.port}"
        self.sent = 0

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def _first_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self._lines.get(timeout=0.2).rstrip("\n")
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"sada run exited with {self.proc.returncode}:\n{self.log()}"
                    ) from None
        raise AssertionError(f"sada run printed nothing within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text("utf-8", "replace")[-4000:]

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=30) as reply:
            body: bytes = reply.read()
            return body

    def get_json(self, path: str) -> Any:
        try:
            return json.loads(self.get(path))
        except urllib.error.HTTPError as e:  # /healthz answers 503 with a body while failing
            return json.loads(e.read())

    def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """/metrics, parsed: sample name -> (labels, value) of each sample."""
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(self.get("/metrics").decode()):
            for sample in family.samples:
                out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
        return out

    def publish(self, events: list[dict[str, Any]]) -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.broker, acks="all", linger_ms=5)
        try:
            for e in events:
                producer.send(
                    topic_for(e),
                    key=str(e["subject"]).encode(),
                    value=json.dumps(e, ensure_ascii=False).encode(),
                )
            producer.flush(timeout=60)
        finally:
            producer.close()
        self.sent += len(events)

    def wait_until(self, what: str, check: Callable[[], bool], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.proc.poll() is not None:
                raise AssertionError(f"sada run exited while waiting for {what}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout}s; sada run log:\n{self.log()}")
            time.sleep(0.2)

    def settle(self, clock: datetime) -> None:
        """Wait until every event sent is taken in and every log partition has reached ``clock``."""

        def taken_in() -> bool:
            h = self.get_json("/healthz")
            ingress, projector = h["workers"]["ingress"], h["workers"]["projector"]
            return bool(
                ingress["received"] >= self.sent
                and ingress["buffered"] == 0
                and projector["lag"] == 0
            )

        self.wait_until("ingress of every event sent", taken_in)
        with SqlStore(f"sqlite:///{self.data_dir / 'sada.db'}") as store:
            self.wait_until(
                f"projector checkpoints at {clock.isoformat()}",
                lambda: (
                    (cps := store.checkpoints()) != []
                    and all(c.clock is not None and c.clock >= clock for c in cps)
                ),
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def sum_samples(
    metrics: dict[str, list[tuple[dict[str, str], float]]], name: str, **match: str
) -> float:
    return sum(
        v
        for labels, v in metrics.get(name, [])
        if all(labels.get(k) == want for k, want in match.items())
    )


def open_in_metrics(
    metrics: dict[str, list[tuple[dict[str, str], float]]],
) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for labels, v in metrics.get("sada_submissions_open", []):
        if v:
            key = (labels["unit"], labels["status"])
            out[key] = out.get(key, 0) + int(v)
    return out


def run_scenario(live: LiveSada, scn: Scenario) -> None:
    """Publish the scenario in time order, then wait until /metrics shows its outcome."""
    live.publish(scn.in_time_order())
    live.settle(scn.clock)
    expected = expected_open(scn)
    seen: dict[tuple[str, str], int] = {}

    def shown() -> bool:
        nonlocal seen
        seen = open_in_metrics(live.metrics())
        return seen == expected

    try:
        live.wait_until("the scenario's SLA states in /metrics", shown, timeout=30)
    except AssertionError as e:
        raise AssertionError(f"/metrics shows {seen}, the rules say {expected}") from e
    late = sum_samples(live.metrics(), "sada_events_late_total")
    assert late == 0, f"{late} events arrived late: the scenario's times no longer hold"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveSada, Scenario]]:
    running = LiveSada(tmp_path_factory.mktemp("dashboard"))
    try:
        scn = scenario()
        run_scenario(running, scn)
        yield running, scn
    finally:
        running.stop()


# -- headless Chromium ------------------------------------------------------------------------


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "chromium not found: install Debian's chromium package "
        "(apt-get update && apt-get install -y chromium)",
        pytrace=False,
    )


def browse(
    tmp: Path, url: str, *args: str, budget_ms: int = 5000
) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"chromium-{uuid.uuid4().hex[:8]}"
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={budget_ms}",
        *args,
        url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, (
        f"chromium failed ({result.returncode}):\n{result.stderr[-3000:]}"
    )
    return result


class _Numbers(HTMLParser):
    """Every element with ``data-metric``: its key, raw ``data-value`` and visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, tuple[str, str]] = {}
        self._open: list[tuple[str, str, str, list[str]]] = []
        self.root: dict[str, str | None] = {}
        self.refreshes: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "html":
            self.root = a
        if a.get("id") == "content":
            self.refreshes = a.get("data-refreshes")
        if "data-metric" in a:
            self._open.append((tag, a["data-metric"] or "", a.get("data-value") or "", []))

    def handle_data(self, data: str) -> None:
        for _tag, _key, _value, texts in self._open:
            texts.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1][0] == tag:
            _tag, key, value, texts = self._open.pop()
            assert key not in self.found, f"data-metric {key!r} appears twice"
            self.found[key] = (value, "".join(texts).strip())


def numbers(dom: str) -> _Numbers:
    parser = _Numbers()
    parser.feed(dom)
    return parser


PERSIAN_DIGITS = str.maketrans("۰۱۲۳۴۵۶۷۸۹٫", "0123456789.")


def expected_numbers(
    m: dict[str, list[tuple[dict[str, str], float]]], units: list[str]
) -> dict[str, float]:
    """What the page must show, computed from /metrics samples."""
    want: dict[str, float] = {
        "overview:open": sum_samples(m, "sada_submissions_open"),
        "overview:closed": sum_samples(m, "sada_submissions_closed"),
        "overview:received": sum_samples(m, "sada_events_received_total"),
        "overview:accepted": sum_samples(m, "sada_events_accepted_total"),
        "overview:rejected": sum_samples(m, "sada_events_rejected_total"),
        "overview:duplicates": sum_samples(m, "sada_events_duplicate_total"),
        "overview:late": sum_samples(m, "sada_events_late_total"),
        "overview:escalations": sum_samples(m, "sada_escalations_total"),
        "overview:lag": sum_samples(m, "sada_consumer_lag_messages"),
        "overview:snapshot_errors": sum_samples(m, "sada_snapshot_errors_total"),
        "clock:seconds": sum_samples(m, "sada_pipeline_clock_seconds"),
    }
    for status in STATUSES:
        want[f"overview:{status}"] = sum_samples(m, "sada_submissions_open", status=status)
    for reason in ("support_threshold", "first_response_overdue", "resolution_overdue"):
        want[f"escalations:reason:{reason}"] = sum_samples(
            m, "sada_escalations_total", reason=reason
        )
    for labels, v in m["sada_events_rejected_total"]:
        if v:
            key = f"rejected:{labels['reason']}"
            want[key] = want.get(key, 0) + v
    for labels, v in m["sada_worker_up"]:
        want[f"worker:{labels['stage']}"] = v
    for labels, v in m["sada_consumer_lag_messages"]:
        want[f"lag:{labels['stage']}:{labels['topic']}"] = v
    for unit in units:
        want[f"unit:{unit}:open"] = sum_samples(m, "sada_submissions_open", unit=unit)
        want[f"unit:{unit}:closed"] = sum_samples(m, "sada_submissions_closed", unit=unit)
        for status in STATUSES:
            want[f"unit:{unit}:{status}"] = sum_samples(
                m, "sada_submissions_open", unit=unit, status=status
            )
    for kind in ("complaint", "criticism", "question", "suggestion"):
        want[f"kind:{kind}:open"] = sum_samples(m, "sada_submissions_open", kind=kind)
        want[f"kind:{kind}:closed"] = sum_samples(m, "sada_submissions_closed", kind=kind)
        for status in STATUSES:
            want[f"kind:{kind}:{status}"] = sum_samples(
                m, "sada_submissions_open", kind=kind, status=status
            )
        for name, family in (
            ("first_response_mean_hours", "sada_first_response_business_hours"),
            ("resolution_mean_hours", "sada_resolution_business_hours"),
        ):
            count = sum_samples(m, f"{family}_count", kind=kind)
            if count:
                want[f"kind:{kind}:{name}"] = sum_samples(m, f"{family}_sum", kind=kind) / count
    return want


def units_in_metrics(m: dict[str, list[tuple[dict[str, str], float]]]) -> list[str]:
    units = {
        labels["unit"]
        for name in ("sada_submissions_open", "sada_submissions_closed")
        for labels, v in m.get(name, [])
        if v
    }
    return sorted(units)


def test_dashboard_in_chromium_shows_what_metrics_export(
    live: tuple[LiveSada, Scenario], tmp_path: Path
) -> None:
    sada, scn = live
    # Long enough for the page to have refreshed itself twice: the numbers read are the refreshed.
    dom = browse(tmp_path, f"{sada.url}/dashboard", "--dump-dom", budget_ms=12_000).stdout
    page = numbers(dom)
    assert int(page.refreshes or 0) >= 2, "the page did not refresh itself"
    m = sada.metrics()
    units = units_in_metrics(m)
    want = expected_numbers(m, units)

    shown_units = sorted({k.split(":")[1] for k in page.found if k.startswith("unit:")})
    assert shown_units == units
    for key, value in sorted(want.items()):
        assert key in page.found, f"the page shows no {key}"
        raw, text_ = page.found[key]
        assert float(raw) == pytest.approx(value), f"{key}: page {raw}, /metrics {value}"
    for unit in units:
        assert float(page.found[f"unit:{unit}:at_risk"][0]) == sum_samples(
            m, "sada_submissions_at_risk", unit=unit
        )
        assert float(page.found[f"unit:{unit}:overdue"][0]) == sum_samples(
            m, "sada_submissions_overdue", unit=unit
        )
    # The page shows what the rules say of the week, unit by unit.
    shown_open = {u: int(float(page.found[f"unit:{u}:open"][0])) for u in units}
    assert {u: n for u, n in shown_open.items() if n} == open_by_unit(expected_open(scn))
    # What a Persian reader sees: Persian digits, right to left, Persian words and unit names.
    assert page.root.get("lang") == "fa" and page.root.get("dir") == "rtl"
    for key in ("overview:open", "overview:at_risk", "overview:overdue", "overview:rejected"):
        raw, text_ = page.found[key]
        assert re.fullmatch(r"[۰-۹]+", text_), f"{key} is shown as {text_!r}"
        assert text_.translate(PERSIAN_DIGITS) == str(int(float(raw)))
    for words in ("گذشته از مهلت", "در معرض تأخیر", "رتبه‌بندی واحدها", "ساعت خط پردازش"):
        assert words in dom
    for unit in units:
        # The shipped configuration names units "Persian / English".
        persian = CONFIG.units[unit].name.split(" / ")[0]
        assert re.search("[\u0600-\u06ff]", persian) and persian in dom
    clock_text = page.found["clock:seconds"][1]
    assert clock_text.startswith("۱۴۰۵/۰۲/"), f"the clock is not a Jalali date: {clock_text!r}"
    # The units' ranking, best first, as the rules of the week say.
    positions = {
        k.split(":")[1]: int(float(v))
        for k, (v, _t) in page.found.items()
        if k.startswith("rank:") and k.endswith(":position")
    }
    assert sorted(positions, key=positions.__getitem__) == [r["unit_id"] for r in EXPECTED_RANKING]
    for row in EXPECTED_RANKING:
        for field_ in ("received", "first_responses_in_time", "first_responses_late"):
            assert float(page.found[f"rank:{row['unit_id']}:{field_}"][0]) == row[field_]

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    browse(tmp_path, f"{sada.url}/dashboard", f"--screenshot={shot}", "--window-size=1400,1000")
    assert shot.stat().st_size > 10_000, "the screenshot is empty"


def test_dashboard_reads_left_to_right_in_english(
    live: tuple[LiveSada, Scenario], tmp_path: Path
) -> None:
    sada, _scn = live
    dom = browse(tmp_path, f"{sada.url}/dashboard?lang=en", "--dump-dom").stdout
    page = numbers(dom)
    assert page.root.get("lang") == "en" and page.root.get("dir") == "ltr"
    for words in ("Overdue", "At risk", "Units ranked", "Pipeline clock", "Food Services"):
        assert words in dom
    m = sada.metrics()
    raw, text_ = page.found["overview:open"]
    assert float(raw) == sum_samples(m, "sada_submissions_open") and text_ == str(int(float(raw)))
    ARTIFACTS.mkdir(exist_ok=True)
    browse(
        tmp_path,
        f"{sada.url}/dashboard?lang=en",
        f"--screenshot={ARTIFACTS / 'dashboard-en.png'}",
        "--window-size=1400,1000",
    )


def test_dashboard_api_gives_the_same_numbers(live: tuple[LiveSada, Scenario]) -> None:
    sada, _scn = live
    data = sada.get_json("/api/v1/dashboard")
    m = sada.metrics()
    assert data["overview"]["open"] == sum_samples(m, "sada_submissions_open")
    assert data["overview"]["rejected"] == sum_samples(m, "sada_events_rejected_total") == 1
    assert data["rejected"] == {"unknown_unit": 1}
    assert data["escalations"]["reason"]["first_response_overdue"] == sum_samples(
        m, "sada_escalations_total", reason="first_response_overdue"
    )
    assert data["clock"]["seconds"] == sum_samples(m, "sada_pipeline_clock_seconds")
    ranking = [
        {k: v for k, v in r.items() if k not in ("position", "name")} for r in data["ranking"]
    ]
    assert ranking == EXPECTED_RANKING
    assert [r["name"] for r in data["ranking"]] == [
        CONFIG.units[r["unit_id"]].name for r in EXPECTED_RANKING
    ]


def test_page_loads_nothing_from_elsewhere(live: tuple[LiveSada, Scenario]) -> None:
    sada, _scn = live
    with urllib.request.urlopen(f"{sada.url}/dashboard", timeout=30) as reply:
        body = reply.read().decode()
        policy = reply.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", body)

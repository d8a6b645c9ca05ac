"""The SQL store as the projector, the tracking API and an auditor use it, on both backends.

One contract suite runs against SQLite (a file in the test's temporary
directory) and PostgreSQL (the server at ``SADA_TEST_POSTGRES_URL``, default
``postgresql+psycopg2://postgres@127.0.0.1:5432/test``). Each test gets fresh
databases: a new SQLite file, or a PostgreSQL schema of its own (selected with
``search_path``) that is dropped afterwards. An unreachable PostgreSQL fails
the test; nothing is skipped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from sada.consumers.archive import GENESIS_HASH, ArchiveRow, verify
from sada.consumers.store import SqlStore
from sada.consumers.store.texts import UNLISTED_PREFIXES
from sada.consumers.tables import metadata
from sada.pipeline.domain.errors import StoreError
from sada.pipeline.domain.logcodec import encode_event, encode_tick, event_key
from sada.pipeline.domain.model import (
    RESPONSE_POSTED,
    SATISFACTION_RATED,
    SUBMISSION_CREATED,
    VOTE_CAST,
    VOTE_RETRACTED,
    Escalated,
    EscalationReason,
    ResponsePosted,
    Stance,
    SubmissionState,
    format_time,
    parse_time,
)
from sada.pipeline.domain.ports import AppliedEvent, BatchWrite, Checkpoint

POSTGRES_URL = os.environ.get(
    "SADA_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

TEHRAN = ZoneInfo("Asia/Tehran")
T0 = datetime(2026, 1, 3, 9, 15, 30, 123457, tzinfo=TEHRAN)  # a Saturday morning
SOURCE = "/integrations/telegram"

# Persian as it arrives: a zero-width non-joiner, Arabic ي and ك, Persian digits.
TITLE = "تأخیر در پاسخ‌گویی به درخواست‌های دانشجویان"
BODY = "سيستم ثبت نام كار نمي‌كند؛ شماره پیگیری قبلی ۷۸۱۶۸۳۸ بود و پاسخی نیامد."
ANSWER = "واحد نظارت و ارزیابی موضوع را بررسی کرد و مشکل برطرف شد."


# -- databases ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
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


OpenStore = Callable[..., SqlStore]


@pytest.fixture
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """``open_store(backend, name="main")``: a migrated store on a fresh database.

    Calling it again with the same backend and name opens another store on the
    same database, as a restarted process would.
    """
    opened: list[SqlStore] = []
    schemas: list[str] = []

    def open_(backend: str, name: str = "main", migrate: bool = True) -> SqlStore:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / 'data' / name}.db"
        else:
            admin: Engine = request.getfixturevalue("postgres_admin")
            schema = f"sada_test_{uuid.uuid5(uuid.NAMESPACE_URL, str(tmp_path) + name).hex}"
            if schema not in schemas:
                with admin.begin() as conn:
                    conn.execute(text(f'CREATE SCHEMA "{schema}"'))
                schemas.append(schema)
            url = (
                make_url(POSTGRES_URL)
                .update_query_dict({"options": f"-csearch_path={schema}"})
                .render_as_string(hide_password=False)
            )
        store = SqlStore(url)
        opened.append(store)
        if migrate:
            store.migrate()
        return store

    yield open_
    for store in opened:
        store.close()
    if schemas:
        admin = request.getfixturevalue("postgres_admin")
        with admin.begin() as conn:
            for schema in schemas:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def store(open_store: OpenStore, backend: str) -> SqlStore:
    return open_store(backend)


# -- a realistic history, batch by batch ---------------------------------------------------


def cloud_event(type_: str, event_id: str, time: datetime, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": SOURCE,
        "type": type_,
        "time": format_time(time),
        "subject": data["submission_id"],
        "datacontenttype": "application/json",
        "dataschema": f"https://sada.example/schemas/{type_}/1.json",
        "data": data,
    }


class Log:
    """Appends canonical-log records of one partition to batches, as the projector would."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.offset = 0
        self.clock: datetime | None = None
        self.sent: dict[str, dict[str, Any]] = {}  # event key -> CloudEvent as sent

    def batch(self) -> BatchWrite:
        return BatchWrite(self.partition, Checkpoint(self.partition))

    def event(
        self,
        batch: BatchWrite,
        ce: dict[str, Any],
        topic: str,
        at: datetime | None = None,
        *,
        late: bool = False,
        effective: bool = True,
        note: str = "",
    ) -> None:
        time = parse_time(ce["time"])
        at = at or time
        batch.archive.append((self.offset, encode_event(ce, at, late, topic)))
        batch.applied.append(
            AppliedEvent(
                key=event_key(ce),
                offset=self.offset,
                submission_id=ce["data"]["submission_id"],
                type=ce["type"],
                time=time,
                at=at,
                late=late,
                effective=effective,
                note=note,
            )
        )
        self.sent[event_key(ce)] = ce
        self._advance(batch, at)

    def tick(self, batch: BatchWrite, at: datetime) -> None:
        batch.archive.append((self.offset, encode_tick(at)))
        self._advance(batch, at)

    def _advance(self, batch: BatchWrite, at: datetime) -> None:
        self.offset += 1
        self.clock = at
        batch.checkpoint = Checkpoint(self.partition, self.offset, self.clock)


def escalation(
    state: SubmissionState,
    reason: EscalationReason,
    at: datetime,
    to_unit: str,
    deadline: datetime | None,
) -> Escalated:
    return Escalated(
        event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{state.submission_id}|{state.level + 1}")),
        submission_id=state.submission_id,
        time=at,
        from_level=state.level,
        to_level=state.level + 1,
        from_unit_id=state.unit_id,
        to_unit_id=to_unit,
        reason=reason,
        support=state.support,
        deadline=deadline,
    )


@dataclasses.dataclass
class History:
    log: Log
    batches: list[BatchWrite]
    complaint: SubmissionState  # final states
    suggestion: SubmissionState


def history(partition: int) -> History:
    """Three batches: two submissions, votes changed and retracted, responses, escalations."""
    log = Log(partition)
    sid1, sid2 = f"sub-{partition}-complaint", f"sub-{partition}-suggestion"
    code1, code2 = f"78168{partition:02d}384", f"40215{partition:02d}763"
    hour = timedelta(hours=1)

    # Batch 1: both submissions created, three voters take a stance, the clock ticks.
    b1 = log.batch()
    t1 = T0
    log.event(
        b1,
        cloud_event(
            SUBMISSION_CREATED,
            f"c-{sid1}",
            t1,
            {
                "submission_id": sid1,
                "tracking_code": code1,
                "kind": "complaint",
                "title": TITLE,
                "body": BODY,
                "language": "fa",
                "channel": "telegram",
                "unit_id": "univ.faculty-med",
                "author": {"id": "p-5f2c", "role": "student"},
                "anonymous": True,
            },
        ),
        "sada.submissions",
    )
    s1 = SubmissionState(
        submission_id=sid1,
        tracking_code=code1,
        kind="complaint",
        channel="telegram",
        created_at=t1,
        status="open",
        unit_id="univ.faculty-med",
        level=0,
        support=0,
        oppose=0,
        arrived_at=t1,
        first_response_due=t1 + 16 * hour,
        resolution_due=t1 + 80 * hour,
        first_response_overdue=False,
        resolution_overdue=False,
        first_response_at=None,
        closed_at=None,
        satisfaction=None,
        escalations=0,
        updated_at=t1,
    )
    t2 = T0 + timedelta(minutes=5, microseconds=1)
    log.event(
        b1,
        cloud_event(
            SUBMISSION_CREATED,
            f"c-{sid2}",
            t2,
            {
                "submission_id": sid2,
                "tracking_code": code2,
                "kind": "suggestion",
                "title": "پیشنهاد برای سامانه‌ی نوبت‌دهی بیمارستان",
                "body": "بهتر است نوبت‌ها با پیامک یادآوری شوند.",
                "language": "fa",
                "channel": "web",
                "unit_id": "univ.hospital-a",
                "author": {"id": "p-90aa", "role": "staff"},
                "anonymous": False,
            },
        ),
        "sada.submissions",
    )
    s2 = replace(
        s1,
        submission_id=sid2,
        tracking_code=code2,
        kind="suggestion",
        channel="web",
        created_at=t2,
        unit_id="univ.hospital-a",
        arrived_at=t2,
        first_response_due=t2 + 40 * hour,
        resolution_due=t2 + 160 * hour,
        updated_at=t2,
    )
    first_votes: list[tuple[str, Stance]] = [("v1", "support"), ("v2", "oppose"), ("v3", "support")]
    for i, (voter, stance) in enumerate(first_votes):
        t = T0 + timedelta(minutes=10 + i, microseconds=999_999 - i)
        log.event(
            b1,
            cloud_event(
                VOTE_CAST,
                f"vote-{sid1}-{voter}-1",
                t,
                {"submission_id": sid1, "voter_id": voter, "stance": stance},
            ),
            "sada.votes",
        )
        b1.stances.append((sid1, voter, stance, t))
    s1 = replace(s1, support=2, oppose=1, updated_at=T0 + timedelta(minutes=12))
    log.tick(b1, T0 + timedelta(minutes=30))
    b1.states = [s1, s2]

    # Batch 2: v2 changes sides (support reaches the threshold: escalation), v1
    # retracts, the new unit acknowledges, a stray answer, the suggestion answered and rated.
    b2 = log.batch()
    t = T0 + hour
    log.event(
        b2,
        cloud_event(
            VOTE_CAST,
            f"vote-{sid1}-v2-2",
            t,
            {"submission_id": sid1, "voter_id": "v2", "stance": "support"},
        ),
        "sada.votes",
    )
    b2.stances.append((sid1, "v2", "support", t))
    s1 = replace(s1, support=3, oppose=0, updated_at=t)
    up = escalation(s1, "support_threshold", t, "univ.vc-health", None)
    b2.escalations.append(up)
    s1 = replace(
        s1,
        level=1,
        escalations=1,
        unit_id="univ.vc-health",
        arrived_at=t,
        first_response_due=t + 16 * hour,
        resolution_due=t + 80 * hour,
    )
    b2.states.append(s1)
    t = T0 + 2 * hour
    log.event(
        b2,
        cloud_event(
            VOTE_RETRACTED, f"retract-{sid1}-v1", t, {"submission_id": sid1, "voter_id": "v1"}
        ),
        "sada.votes",
    )
    b2.stances.append((sid1, "v1", None, t))
    s1 = replace(s1, support=2, updated_at=t)
    responses = [
        (sid1, "r-ack", "univ.vc-health", "acknowledgement", T0 + 3 * hour, True, ""),
        (sid2, "r-stray", "univ.faculty-med", "answer", T0 + 4 * hour, False, "not holding it"),
        (sid2, "r-answer", "univ.hospital-a", "answer", T0 + 5 * hour, True, ""),
    ]
    for sid, rid, unit, kind, at, effective, note in responses:
        ce = cloud_event(
            RESPONSE_POSTED,
            f"resp-{sid}-{rid}",
            at,
            {
                "submission_id": sid,
                "response_id": rid,
                "unit_id": unit,
                "kind": kind,
                "body": ANSWER,
            },
        )
        log.event(b2, ce, "sada.responses", effective=effective, note=note)
        b2.responses.append(
            (
                ResponsePosted(event_key(ce), at, sid, rid, unit, kind, None),
                at,
                effective,
            )
        )
    s1 = replace(
        s1, first_response_due=None, first_response_at=T0 + 3 * hour, updated_at=T0 + 3 * hour
    )
    closed_at = T0 + 5 * hour
    s2 = replace(
        s2,
        status="closed",
        first_response_due=None,
        resolution_due=None,
        first_response_at=closed_at,
        closed_at=closed_at,
        updated_at=closed_at,
    )
    rated_at = T0 + 6 * hour
    log.event(
        b2,
        cloud_event(
            SATISFACTION_RATED,
            f"rate-{sid2}",
            T0 + 5 * hour + timedelta(microseconds=7),
            {"submission_id": sid2, "rating": 4, "comment": "ممنون از پیگیری"},
        ),
        "sada.responses",
        rated_at,
        late=True,
    )
    s2 = replace(s2, satisfaction=4, updated_at=rated_at)
    b2.states += [s1, s2]

    # Batch 3: a voter supports and retracts within the batch; the resolution
    # deadline passes at the vice-chancellery and the complaint goes to the top.
    b3 = log.batch()
    t = T0 + 7 * hour
    log.event(
        b3,
        cloud_event(
            VOTE_CAST,
            f"vote-{sid1}-v5-1",
            t,
            {"submission_id": sid1, "voter_id": "v5", "stance": "support"},
        ),
        "sada.votes",
    )
    b3.stances.append((sid1, "v5", "support", t))
    t_retract = t + timedelta(minutes=1)
    log.event(
        b3,
        cloud_event(
            VOTE_RETRACTED,
            f"retract-{sid1}-v5",
            t_retract,
            {"submission_id": sid1, "voter_id": "v5"},
        ),
        "sada.votes",
    )
    b3.stances.append((sid1, "v5", None, t_retract))
    due = s1.resolution_due
    assert due is not None
    b3.escalations.append(escalation(s1, "resolution_overdue", due, "univ", due))
    s1 = replace(
        s1,
        level=2,
        escalations=2,
        unit_id="univ",
        arrived_at=due,
        first_response_due=due + 16 * hour,
        resolution_due=due + 80 * hour,
        updated_at=due,
    )
    log.tick(b3, due + timedelta(seconds=1))
    b3.states.append(s1)
    return History(log, [b1, b2, b3], s1, s2)


def write_all(store: SqlStore, batches: list[BatchWrite]) -> None:
    for batch in batches:
        store.write(batch)


def sql(store: SqlStore, statement: str, **params: Any) -> None:
    """Change the database behind the store's back, as a tamperer with SQL access would."""
    with store.engine.connect() as conn:
        conn.execute(text(statement), params)
        conn.commit()


# -- schema --------------------------------------------------------------------------------


def test_migrate_is_idempotent_and_keeps_data(
    store: SqlStore, open_store: OpenStore, backend: str
) -> None:
    h = history(0)
    store.write(h.batches[0])
    before = store.dump()
    store.migrate()
    again = open_store(backend)  # another process starting on the same database
    again.migrate()
    assert again.dump() == before
    assert again.load(0)[0].next_offset == h.batches[0].checkpoint.next_offset


def test_migrated_schema_matches_the_table_definitions(store: SqlStore) -> None:
    with store.engine.connect() as conn:
        # Search structures and the urgency expression index are not in the metadata.
        context = MigrationContext.configure(
            conn,
            opts={"include_name": lambda name, *_: not (name or "").startswith(UNLISTED_PREFIXES)},
        )
        diffs = compare_metadata(context, metadata)
    assert diffs == []


def test_store_errors_are_store_errors(open_store: OpenStore, backend: str) -> None:
    fresh = open_store(backend, "unmigrated", migrate=False)
    with pytest.raises(StoreError, match="partition 0"):
        fresh.write(history(0).batches[0])
    with pytest.raises(StoreError, match="unsupported database"):
        SqlStore("mysql://nobody@127.0.0.1/none")
    nowhere = SqlStore("postgresql+psycopg2://postgres@127.0.0.1:1/none?connect_timeout=5")
    with pytest.raises(StoreError, match="loading partition failed") as failed:
        nowhere.load(0)
    assert "\n" not in str(failed.value)  # one line, fit for a CLI error
    nowhere.close()


# -- projector port --------------------------------------------------------------------------


def test_write_then_load_round_trips_states_and_checkpoint_exactly(
    store: SqlStore, open_store: OpenStore, backend: str
) -> None:
    h = history(3)
    write_all(store, h.batches)
    checkpoint, states = open_store(backend).load(3)  # as a restarted projector sees it

    assert states == sorted([h.complaint, h.suggestion], key=lambda s: s.submission_id)
    by_id = {s.submission_id: s for s in states}
    # Instants come back in UTC, to the microsecond, whatever zone they were written in.
    assert (
        format_time(by_id[h.suggestion.submission_id].created_at) == "2026-01-03T05:50:30.123458Z"
    )
    assert by_id[h.complaint.submission_id].created_at.microsecond == 123457
    assert all(
        s.created_at.utcoffset() == timedelta(0) and s.updated_at.tzinfo is not None for s in states
    )

    last_offset, _ = h.batches[-1].archive[-1]
    assert checkpoint.partition == 3
    assert checkpoint.next_offset == last_offset + 1
    assert checkpoint.clock == h.log.clock
    assert checkpoint.head_hash == list(store.iter_archive(3))[-1].hash
    assert store.load_checkpoint(3) == checkpoint
    assert store.load(4) == (Checkpoint(4), [])

    # What an outside SQL tool reads: the one RFC 3339 UTC spelling, on both backends.
    with store.engine.connect() as conn:
        stored = conn.execute(
            text("SELECT created_at, updated_at FROM submissions WHERE submission_id = :s"),
            {"s": h.complaint.submission_id},
        ).one()
    assert tuple(stored) == (
        format_time(h.complaint.created_at),
        format_time(h.complaint.updated_at),
    )


def test_writers_of_different_partitions_share_one_database(
    open_store: OpenStore, backend: str
) -> None:
    """Two processes' projectors (here: threads with stores of their own) writing at once."""
    histories = {p: history(p) for p in (0, 1)}
    stores = {p: open_store(backend) for p in histories}
    errors: list[BaseException] = []

    def project(p: int) -> None:
        log = histories[p].log
        ticks = []
        for i in range(40):  # the clock moving: many small batches, each read then written
            batch = log.batch()
            log.tick(batch, T0 + timedelta(days=1, seconds=i))
            ticks.append(batch)
        try:
            for batch in [*histories[p].batches, *ticks]:
                stores[p].stances([(histories[p].complaint.submission_id, "v1")])
                stores[p].write(batch)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=project, args=(p,)) for p in histories]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    report = stores[0].verify_archive()
    assert report.ok and report.partitions == 2
    assert [c.next_offset for c in stores[1].checkpoints()] == [
        histories[p].log.offset for p in (0, 1)
    ]


def test_stances_upsert_change_and_delete(store: SqlStore) -> None:
    h = history(0)
    sid = h.complaint.submission_id
    pairs = [(sid, v) for v in ("v1", "v2", "v3", "v5", "nobody")]

    store.write(h.batches[0])
    assert store.stances(pairs) == {
        (sid, "v1"): "support",
        (sid, "v2"): "oppose",
        (sid, "v3"): "support",
    }
    store.write(h.batches[1])
    assert store.stances(pairs) == {(sid, "v2"): "support", (sid, "v3"): "support"}
    store.write(h.batches[2])  # v5 supported and retracted inside one batch: the last stance wins
    assert store.stances(pairs) == {(sid, "v2"): "support", (sid, "v3"): "support"}
    assert store.stances([]) == {}


def test_stances_and_ledger_lookups_of_thousands_of_keys(store: SqlStore) -> None:
    log = Log(1)
    batch = log.batch()
    sid = "sub-viral"
    t = T0
    cast: dict[tuple[str, str], Stance] = {}
    for i in range(2500):
        t += timedelta(milliseconds=1)
        voter = f"voter-{i:05d}"
        stance: Stance = "support" if i % 3 else "oppose"
        log.event(
            batch,
            cloud_event(
                VOTE_CAST,
                f"vote-{i}",
                t,
                {"submission_id": sid, "voter_id": voter, "stance": stance},
            ),
            "sada.votes",
        )
        batch.stances.append((sid, voter, stance, t))
        cast[(sid, voter)] = stance
    store.write(batch)

    asked = [(sid, f"voter-{i:05d}") for i in range(3000)]  # 500 of them never voted
    assert store.stances(asked) == cast

    keys = [f"{SOURCE} vote-{i}" for i in range(3000)]
    assert store.seen(keys) == set(keys[:2500])


def test_seen_names_the_applied_event_keys(store: SqlStore) -> None:
    h = history(2)
    first = {a.key for a in h.batches[0].applied}
    later = {a.key for a in h.batches[1].applied}
    assert store.seen(first | later) == set()
    store.write(h.batches[0])
    assert store.seen(first | later | {"/elsewhere 1"}) == first
    assert store.seen([]) == set()


def test_escalation_outbox(store: SqlStore) -> None:
    h = history(0)
    write_all(store, h.batches)
    support_up, overdue = h.batches[1].escalations[0], h.batches[2].escalations[0]

    assert store.unpublished_escalations() == [support_up, overdue]  # oldest first
    assert store.unpublished_escalations(limit=1) == [support_up]
    store.mark_published([support_up.event_id])
    assert store.unpublished_escalations() == [overdue]

    # The same decision written again (a replay) is absorbed, and stays published.
    log = Log(0)
    log.offset = h.log.offset
    again = log.batch()
    assert h.log.clock is not None
    log.tick(again, h.log.clock + timedelta(seconds=1))
    again.escalations = [support_up, overdue]
    store.write(again)
    assert store.unpublished_escalations() == [overdue]
    store.mark_published([overdue.event_id, "no-such-id"])
    assert store.unpublished_escalations() == []
    assert len(store.dump()["escalations"]) == 2


def test_a_failed_batch_leaves_nothing(store: SqlStore) -> None:
    h = history(0)
    store.write(h.batches[0])
    before = store.dump()

    # Batch 2 with one response twice: refused after its archive rows, ledger
    # entries, states and stances were already sent to the database.
    good = h.batches[1]
    bad = replace(good, responses=[*good.responses, good.responses[-1]])
    with pytest.raises(StoreError):
        store.write(bad)
    assert store.dump() == before

    # A writer working from a stale checkpoint is refused as a whole too.
    with pytest.raises(StoreError, match="already written"):
        store.write(h.batches[0])
    assert store.dump() == before

    store.write(h.batches[1])  # the good batch still goes through and continues the chain
    assert store.load_checkpoint(0).next_offset == h.batches[1].checkpoint.next_offset
    assert store.verify_archive().ok


def test_write_returns_the_checkpoint_it_stored(store: SqlStore) -> None:
    for batch in history(2).batches:
        assert store.write(batch) == store.load_checkpoint(2)


def test_a_rebuild_stores_what_batch_by_batch_writes_store(
    open_store: OpenStore, backend: str
) -> None:
    histories = [history(p) for p in (0, 1)]
    plain, rebuilt = open_store(backend, "plain"), open_store(backend, "rebuilt")
    for h in histories:
        write_all(plain, h.batches)
    with rebuilt.rebuilding():
        for h in histories:
            for batch in h.batches:
                assert rebuilt.write(batch) == rebuilt.load_checkpoint(h.log.partition)
            # The rebuilding thread reads what it wrote, held-back states included.
            assert rebuilt.load(h.log.partition) == plain.load(h.log.partition)
    assert rebuilt.dump() == plain.dump()
    # Committed and durable: a process opening the database now sees all of it.
    reopened = open_store(backend, "rebuilt")
    assert reopened.dump() == plain.dump()
    assert reopened.verify_archive().ok
    if backend == "sqlite":  # back in the mode the live store runs in
        with reopened.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_a_failed_batch_in_a_rebuild_leaves_nothing_and_the_rebuild_goes_on(
    open_store: OpenStore, backend: str
) -> None:
    h = history(0)
    plain, rebuilt = open_store(backend, "plain"), open_store(backend, "rebuilt")
    write_all(plain, h.batches)
    good = h.batches[1]
    bad = replace(good, responses=[*good.responses, good.responses[-1]])
    with rebuilt.rebuilding():
        rebuilt.write(h.batches[0])
        before = rebuilt.dump()
        with pytest.raises(StoreError):
            rebuilt.write(bad)
        assert rebuilt.dump() == before
        write_all(rebuilt, h.batches[1:])
    assert rebuilt.dump() == plain.dump()


def test_a_rebuild_shares_the_database_with_a_reader(open_store: OpenStore, backend: str) -> None:
    h = history(0)
    plain = open_store(backend, "plain")
    write_all(plain, h.batches)
    rebuilt = open_store(backend, "rebuilt")
    reader = open_store(backend, "rebuilt")  # another process, holding the database open
    reader.load(0)
    with rebuilt.rebuilding():
        write_all(rebuilt, h.batches)
        assert reader.load_checkpoint(0) == Checkpoint(0)  # nothing committed yet
    assert reader.dump() == plain.dump()


def test_a_rebuild_that_stops_leaves_nothing_of_itself(store: SqlStore) -> None:
    h = history(0)
    empty = store.dump()
    with pytest.raises(RuntimeError, match="replay stopped"), store.rebuilding():
        write_all(store, h.batches)
        raise RuntimeError("replay stopped")
    assert store.dump() == empty
    write_all(store, h.batches)  # the store works as before: rebuilt from the start
    assert store.verify_archive().ok


def test_sqlite_and_postgresql_hold_identical_contents(open_store: OpenStore) -> None:
    lite, pg = open_store("sqlite"), open_store("postgresql")
    histories = [history(p) for p in (0, 1, 2)]
    for s in (lite, pg):
        for h in histories:
            write_all(s, h.batches)
        s.mark_published([histories[1].batches[1].escalations[0].event_id])

    dump = lite.dump()
    assert dump == pg.dump()
    assert {name: len(rows) for name, rows in dump.items()} == {
        "submissions": 6,
        "votes": 6,
        "responses": 9,
        "escalations": 6,
        "events": sum(len(b.applied) for h in histories for b in h.batches),
        "rejections": 0,
        "archive": sum(len(b.archive) for h in histories for b in h.batches),
        "checkpoints": 3,
        # Each partition's tree of n leaves keeps its 2n - popcount(n) complete subtrees.
        "merkle_nodes": sum(
            2 * n - n.bit_count()
            for n in (sum(len(b.archive) for b in h.batches) for h in histories)
        ),
    }
    for h in histories:
        code = h.complaint.tracking_code
        assert lite.submission_by_code(code) == pg.submission_by_code(code)
        sid = h.complaint.submission_id
        assert lite.timeline(sid) == pg.timeline(sid)
        assert lite.load(h.log.partition) == pg.load(h.log.partition)
    assert lite.unpublished_escalations() == pg.unpublished_escalations()
    assert list(lite.iter_archive()) == list(pg.iter_archive())


# -- read queries ------------------------------------------------------------------------------


def test_tracking_code_lookup_shows_what_the_author_sees(store: SqlStore) -> None:
    h = history(0)
    write_all(store, h.batches)
    s = h.complaint

    seen = store.submission_by_code(s.tracking_code)
    assert seen is not None
    assert {
        k: seen[k] for k in ("submission_id", "status", "unit_id", "level", "support", "oppose")
    } == {
        "submission_id": s.submission_id,
        "status": "open",
        "unit_id": "univ",
        "level": 2,
        "support": 2,
        "oppose": 0,
    }
    assert seen["deadlines"] == {
        "first_response": format_time(s.first_response_due),  # type: ignore[arg-type]
        "resolution": format_time(s.resolution_due),  # type: ignore[arg-type]
    }
    assert seen["overdue"] == {"first_response": False, "resolution": False}
    assert [r["response_id"] for r in seen["responses"]] == ["r-ack"]
    assert [(e["from_level"], e["to_level"], e["reason"]) for e in seen["escalations"]] == [
        (0, 1, "support_threshold"),
        (1, 2, "resolution_overdue"),
    ]
    assert seen["escalations"][1]["deadline"] == seen["escalations"][1]["time"]

    closed = store.submission_by_code(h.suggestion.tracking_code)
    assert closed is not None
    assert closed["status"] == "closed"
    assert closed["deadlines"] == {"first_response": None, "resolution": None}
    assert closed["satisfaction"] == 4
    assert [(r["response_id"], r["effective"]) for r in closed["responses"]] == [
        ("r-stray", False),
        ("r-answer", True),
    ]
    assert store.submission_by_code("0000000000") is None


def test_timeline_gives_every_event_in_log_order_with_its_cloud_event(store: SqlStore) -> None:
    h = history(0)
    write_all(store, h.batches)
    sid = h.complaint.submission_id

    timeline = store.timeline(sid)
    expected = [a for b in h.batches for a in b.applied if a.submission_id == sid]
    assert [e["offset"] for e in timeline] == [a.offset for a in expected]
    assert [e["type"] for e in timeline] == [a.type for a in expected]
    for entry in timeline:
        assert entry["event"] == h.log.sent[entry["key"]]  # exactly as sent, Persian included
    assert timeline[0]["event"]["data"]["body"] == BODY
    late = store.timeline(h.suggestion.submission_id)[-1]
    assert (late["type"], late["late"], late["at"]) == (
        SATISFACTION_RATED,
        True,
        format_time(T0 + timedelta(hours=6)),
    )
    assert store.timeline("sub-unknown") == []


# -- the archive -------------------------------------------------------------------------------


def test_archive_hash_follows_the_documented_formula(store: SqlStore) -> None:
    h = history(5)
    write_all(store, h.batches)
    rows = list(store.iter_archive(5))
    assert [r.offset for r in rows] == list(range(h.log.offset))
    first, second = rows[0], rows[1]
    assert first.prev_hash == GENESIS_HASH
    assert first.hash == hashlib.sha256(b"0" * 64 + b"\n5\n0\n" + first.record).hexdigest()
    assert second.prev_hash == first.hash
    assert (
        second.hash == hashlib.sha256(first.hash.encode() + b"\n5\n1\n" + second.record).hexdigest()
    )
    assert first.record == h.batches[0].archive[0][1]


def test_archive_verifies_then_a_changed_byte_is_found(store: SqlStore) -> None:
    for p in (0, 1):
        write_all(store, history(p).batches)
    report = store.verify_archive()
    assert (report.ok, report.records, report.first_bad, report.partitions) == (
        True,
        2 * history(0).log.offset,
        None,
        2,
    )

    target = next(r for r in store.iter_archive(1) if r.offset == 8)  # a response, in Persian
    record = bytearray(target.record)
    i = record.index("ی".encode())  # a letter of the Persian body
    record[i + 1] ^= 0x01
    sql(
        store,
        'UPDATE archive SET record = :r WHERE "partition" = 1 AND "offset" = 8',
        r=bytes(record),
    )

    report = store.verify_archive()
    assert not report.ok
    assert report.first_bad is not None
    assert report.first_bad[:2] == (1, 8)
    assert "hash mismatch" in report.first_bad[2]
    assert report.records == 2 * history(0).log.offset


def test_archive_finds_a_changed_hash(store: SqlStore) -> None:
    write_all(store, history(0).batches)
    sql(store, 'UPDATE archive SET hash = :h WHERE "partition" = 0 AND "offset" = 3', h="f" * 64)
    report = store.verify_archive()
    assert report.first_bad is not None and report.first_bad[:2] == (0, 3)


@pytest.mark.parametrize("where", ["middle", "first", "last"])
def test_archive_finds_a_deleted_record(store: SqlStore, where: str) -> None:
    h = history(0)
    write_all(store, h.batches)
    last = h.log.offset - 1
    deleted, named, words = {
        "middle": (4, 5, "gap: records missing at offsets 4..4"),
        "first": (0, 1, "genesis"),
        "last": (last, last - 1, "missing at the end"),
    }[where]
    sql(store, 'DELETE FROM archive WHERE "partition" = 0 AND "offset" = :o', o=deleted)
    report = store.verify_archive()
    assert not report.ok
    assert report.first_bad is not None
    assert report.first_bad[:2] == (0, named)
    assert words in report.first_bad[2]
    assert report.records == last


def test_verify_checks_each_partition_from_genesis() -> None:
    def chain(p: int, records: list[bytes]) -> list[ArchiveRow]:
        out, prev = [], GENESIS_HASH
        for o, rec in enumerate(records):
            h = hashlib.sha256(f"{prev}\n{p}\n{o}\n".encode() + rec).hexdigest()
            out.append(ArchiveRow(p, o, rec, prev, h))
            prev = h
        return out

    a, b = chain(0, [b"x", b"y"]), chain(1, [b"z"])
    assert verify(a + b).ok
    # A record moved to another partition no longer verifies there.
    moved = ArchiveRow(1, 0, a[0].record, a[0].prev_hash, a[0].hash)
    report = verify([*a, moved])
    assert report.first_bad is not None and report.first_bad[:2] == (1, 0)
    assert not verify(b + a).ok  # partitions out of order

    # Heads read before records were appended still verify; a lost tail does not.
    assert verify(a + b, heads={0: a[0].hash, 1: b[0].hash}).ok
    cut = verify(a[:1] + b, heads={0: a[1].hash})
    assert cut.first_bad is not None and cut.first_bad[:2] == (0, 0)


def test_background_checkpoints_move_the_writes_into_the_database_file(tmp_path: Path) -> None:
    """The projector's store checkpoints its WAL off the commits; the writes still reach the file.

    A reader that ignores the WAL (``immutable=1``) sees only what a checkpoint
    has copied into the database file. These writes are far below SQLite's
    automatic threshold, so without the background checkpointer they would stay
    in the WAL.
    """
    import sqlite3
    import time

    path = tmp_path / "sada.db"
    store = SqlStore(f"sqlite:///{path}")
    try:
        store.migrate()
        store.checkpoint_in_background(interval=0.05)
        h = history(3)
        write_all(store, h.batches)

        def archived_in_file() -> int:
            conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
            try:
                return int(conn.execute("SELECT count(*) FROM archive").fetchone()[0])
            except sqlite3.DatabaseError:
                return 0  # the file does not hold the table yet
            finally:
                conn.close()

        expected = sum(len(b.archive) for b in h.batches)
        deadline = time.monotonic() + 20
        while archived_in_file() != expected:
            assert time.monotonic() < deadline, "the writes never reached the database file"
            time.sleep(0.05)
        assert [r.offset for r in store.iter_archive(3)] == [
            offset for b in h.batches for offset, _ in b.archive
        ]
    finally:
        store.close()

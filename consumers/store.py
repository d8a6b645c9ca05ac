"""The SQL store behind the projector: read model, archive and checkpoints in one database.

:class:`SqlStore` implements :class:`sada.pipeline.domain.ports.ProjectionStore`: a
projector batch (archive records, ledger entries, states, stances, responses,
escalations and the partition checkpoint) is written in ONE transaction, so a
crash leaves either all of it or none. It also answers the read queries of the
HTTP API and the audit commands.

SQLite (the embedded default) runs in WAL mode and write transactions take the
write lock up front (``BEGIN IMMEDIATE``), so several processes can share one
file without failing on lock upgrades. PostgreSQL is the production database.
Every SQLAlchemy error leaves as :class:`sada.pipeline.domain.errors.StoreError`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from itertools import pairwise
from operator import attrgetter
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import (
    Connection,
    Dialect,
    Engine,
    Table,
    create_engine,
    delete,
    event,
    false,
    insert,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql import bindparam
from sqlalchemy.sql.dml import UpdateBase

from sada.consumers import migrations
from sada.consumers.archive import ArchiveRow, VerifyReport, chain_hash, verify
from sada.consumers.tables import (
    STATE_TABLES,
    Instant,
    archive,
    checkpoints,
    escalations,
    events,
    instant_text,
    responses,
    submissions,
    votes,
)
from sada.pipeline.domain.errors import StoreError
from sada.pipeline.domain.model import Escalated, Stance, SubmissionState, format_time, utc
from sada.pipeline.domain.ports import BatchWrite, Checkpoint

T = TypeVar("T")

# Bound parameters per statement stay far below SQLite's oldest limit (999).
_CHUNK = 900
# Keys per prefetch lookup: one array (JSON on SQLite) parameter, however many keys.
_LOOKUP_CHUNK = 5000
_MIGRATION_LOCK = 0x5ADA0001  # PostgreSQL advisory lock key: one migrator at a time
_STATE_FIELDS = tuple(f.name for f in dataclasses.fields(SubmissionState))
_ESCALATION_FIELDS = tuple(f.name for f in dataclasses.fields(Escalated))
_WRITE = "sada_write"  # execution option: this connection will write
log = logging.getLogger(__name__)

_CHECKPOINT_SECONDS = 1.0  # how often the background checkpointer moves the WAL into the file
_BUSY_TIMEOUT_MS = 30_000  # SQLite: how long a statement waits for another connection's lock
# While rebuilding (see SqlStore.rebuilding): the SQLite page cache, and how many
# states are held back at most. A commit writes every page its batches dirtied,
# and rows with random keys (event keys, submission ids) dirty about one page of
# each index apiece once an index outgrows a batch: committing every batch made
# the cost per record grow with the store. One transaction, and a cache holding
# the pages it dirties, write most pages once.
_REBUILD_CACHE_KIB = 128 * 1024
_REBUILD_STATES = 200_000


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _describe(e: BaseException) -> str:
    """One line: the driver's own message when there is one."""
    cause = getattr(e, "orig", None) or e
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own transaction handling skips BEGIN for DDL and SELECT and
    # cannot BEGIN IMMEDIATE; _sqlite_on_begin emits BEGIN instead.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        # First: switching to WAL may wait.
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=OFF")
        # The projector, the one heavy writer, checkpoints from a thread of its own
        # (SqlStore.checkpoint_in_background); other writers keep SQLite's automatic
        # checkpoint. After a burst the WAL is truncated back to 64 MiB.
        cursor.execute("PRAGMA journal_size_limit=67108864")
    finally:
        cursor.close()


def _sqlite_pragma(conn: Connection, pragma: str) -> Any:
    """Run ``PRAGMA pragma`` on the driver's connection; the first value it returns, if any.

    Straight to the driver: through SQLAlchemy the statement would open a
    transaction first, and some pragmas cannot change inside one.
    """
    raw = conn.connection.dbapi_connection
    assert raw is not None
    cursor = raw.cursor()
    try:
        row = cursor.execute(f"PRAGMA {pragma}").fetchone()
    finally:
        cursor.close()
    return None if row is None else row[0]


def _sqlite_journal_mode(conn: Connection, mode: str) -> str:
    """Switch the journal mode if no other connection has the file open; the mode now.

    Leaving WAL mode, or entering it, needs the file to itself: with another
    connection open the switch fails at once (no busy wait) and nothing changes.
    """
    _sqlite_pragma(conn, "busy_timeout=0")
    try:
        _sqlite_pragma(conn, f"journal_mode={mode}")
    except sqlite3.OperationalError:
        pass
    finally:
        _sqlite_pragma(conn, f"busy_timeout={_BUSY_TIMEOUT_MS}")
    return str(_sqlite_pragma(conn, "journal_mode")).lower()


def _sqlite_sync(conn: Connection) -> None:
    """fsync the main database file (nothing to do for an in-memory database)."""
    raw = conn.connection.dbapi_connection
    assert raw is not None
    cursor = raw.cursor()
    try:
        files = [row[2] for row in cursor.execute("PRAGMA database_list") if row[1] == "main"]
    finally:
        cursor.close()
    if files and files[0]:
        fd = os.open(files[0], os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _sqlite_on_begin(conn: Connection) -> None:
    # A writer takes the lock at BEGIN: a deferred transaction that reads first
    # fails outright (not after the busy timeout) if another writer got there first.
    immediate = conn.get_execution_options().get(_WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _is_memory(url: URL) -> bool:
    db = url.database or ""
    return db in ("", ":memory:") or url.query.get("mode") == "memory"


def _create_engine(url: URL) -> Engine:
    backend = url.get_backend_name()
    if backend == "postgresql":
        # Upserts and deletes are not sent as multi-row VALUES; batch them
        # (psycopg2's execute_batch) instead of paying one round trip per row.
        if url.get_driver_name() == "psycopg2":
            return create_engine(
                url,
                pool_pre_ping=True,
                executemany_mode="values_plus_batch",
                executemany_batch_page_size=500,
            )
        return create_engine(url, pool_pre_ping=True)
    if backend != "sqlite":
        raise StoreError(f"unsupported database {backend!r}: use sqlite or postgresql")
    if _is_memory(url):
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        if not url.query.get("uri"):
            Path(url.database or "").parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _no_autocheckpoint(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA wal_autocheckpoint=0")
    finally:
        cursor.close()


class _Checkpointer:
    """Checkpoints a SQLite file's WAL from a thread and connection of its own.

    An automatic checkpoint runs inside the commit that crosses the threshold:
    measured on the projector at 2,000 events/s, a commit of a few dozen
    records stalled for 150-200 ms about every 1.5 s, and those stalls were
    the tail of the vote -> escalation latency. A PASSIVE checkpoint never
    waits for readers or writers, and writers go on appending to the WAL
    while it copies.
    """

    def __init__(self, database: str, uri: bool, interval: float) -> None:
        self._database = database
        self._uri = uri
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sada-wal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = sqlite3.connect(self._database, uri=self._uri, check_same_thread=False)
        try:
            while not self._stop.wait(self._interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as e:  # the next round tries again; writers are unaffected
                    log.warning("WAL checkpoint of %s failed: %s", self._database, e)
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _text(value: datetime | None) -> str | None:
    return None if value is None else instant_text(value)


class _Bulk:
    """One statement run for many rows, with as little work per row as the driver allows.

    Rows are tuples of values already in stored form (instants as text), in
    the order of ``names``. SQLAlchemy's per-row parameter processing costs
    more than the database's own insert, so:

    - SQLite: the statement is compiled once and the rows go straight to the
      driver's ``executemany``;
    - PostgreSQL with psycopg2: ``values_sql`` (one ``VALUES %s`` placeholder)
      runs through ``psycopg2.extras.execute_values``, a few statements of
      many rows each. SQLAlchemy sends upserts one row per statement;
    - any other driver: SQLAlchemy's ``executemany``.
    """

    def __init__(
        self,
        dialect: Dialect,
        statement: UpdateBase,
        names: Sequence[str],
        values_sql: str | None = None,
    ) -> None:
        self.statement = statement
        self.names = tuple(names)
        self.sql: str | None = None
        self.order: tuple[int, ...] | None = None
        self.values_sql: str | None = None
        if dialect.name == "sqlite":
            compiled = statement.compile(dialect=dialect)
            self.sql = str(compiled)
            params = tuple(compiled.positiontup or ())
            if params != self.names:
                self.order = tuple(self.names.index(n) for n in params)
        elif dialect.driver == "psycopg2":
            self.values_sql = values_sql

    def run(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        if self.values_sql is not None:
            from psycopg2.extras import execute_values  # type: ignore[import-untyped]

            cursor = conn.connection.cursor()  # the DBAPI cursor, inside this transaction
            try:
                execute_values(cursor, self.values_sql, rows, page_size=1000)
            finally:
                cursor.close()
        elif self.sql is None:
            conn.execute(self.statement, [dict(zip(self.names, r, strict=True)) for r in rows])
        elif self.order is None:
            conn.exec_driver_sql(self.sql, list(rows))
        else:
            order = self.order
            conn.exec_driver_sql(self.sql, [tuple(r[i] for i in order) for r in rows])


def _values_sql(
    dialect: Dialect,
    table: Table,
    names: Sequence[str],
    conflict: Sequence[str] = (),
    update: bool = False,
    fixed: Sequence[str] = (),
) -> str:
    """``INSERT INTO table (names) VALUES %s [ON CONFLICT (conflict) DO UPDATE/NOTHING]``.

    An update sets every column but the conflict keys and ``fixed``.
    """
    q = dialect.identifier_preparer.quote
    sql = f"INSERT INTO {q(table.name)} ({', '.join(q(n) for n in names)}) VALUES %s"
    if conflict:
        sql += f" ON CONFLICT ({', '.join(q(k) for k in conflict)}) DO "
        if update:
            kept = (*conflict, *fixed)
            sets = (f"{q(n)} = EXCLUDED.{q(n)}" for n in names if n not in kept)
            sql += "UPDATE SET " + ", ".join(sets)
        else:
            sql += "NOTHING"
    return sql


class _Lookups:
    """The projector's prefetch queries: a whole batch of keys in one parameter.

    A row-value ``IN`` list makes SQLite scan the whole votes table, so the
    keys travel as one JSON array (SQLite, walked with ``json_each``, which
    drives the join) or as arrays (PostgreSQL, ``unnest``/``ANY``), and every
    key is one primary-key probe.
    """

    def __init__(self, dialect: Dialect) -> None:
        if dialect.name == "postgresql":
            self.seen = text("SELECT key FROM events WHERE key = ANY(CAST(:keys AS text[]))")
            self.stances = text(
                "SELECT v.submission_id, v.voter_id, v.stance"
                " FROM unnest(CAST(:sids AS text[]), CAST(:voters AS text[])) AS j(sid, voter)"
                " JOIN votes AS v ON v.submission_id = j.sid AND v.voter_id = j.voter"
            )
        else:
            self.seen = text(
                "SELECT key FROM events WHERE key IN (SELECT value FROM json_each(:keys))"
            )
            # CROSS JOIN: SQLite keeps the left table as the outer loop.
            self.stances = text(
                "SELECT v.submission_id, v.voter_id, v.stance"
                " FROM json_each(:pairs) AS j CROSS JOIN votes AS v"
                " ON v.submission_id = json_extract(j.value, '$[0]')"
                " AND v.voter_id = json_extract(j.value, '$[1]')"
            )


def _upsert(
    dialect: Dialect, table: Table, keys: Sequence[str], fixed: Sequence[str] = ()
) -> UpdateBase:
    """INSERT ... ON CONFLICT (keys) DO UPDATE every other column but ``fixed``."""
    kept = (*keys, *fixed)
    if dialect.name == "postgresql":
        pg = postgresql.insert(table)
        cols = {c.name: pg.excluded[c.name] for c in table.c if c.name not in kept}
        return pg.on_conflict_do_update(index_elements=list(keys), set_=cols)
    lite = sqlite.insert(table)
    cols = {c.name: lite.excluded[c.name] for c in table.c if c.name not in kept}
    return lite.on_conflict_do_update(index_elements=list(keys), set_=cols)


def _insert_ignore(dialect: Dialect, table: Table, keys: Sequence[str]) -> UpdateBase:
    if dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=list(keys))
    return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(keys))


def _names(table: Table) -> tuple[str, ...]:
    return tuple(c.name for c in table.c)


class _BulkStatements:
    """The statements of :meth:`SqlStore.write`, prepared once per store."""

    def __init__(self, d: Dialect) -> None:
        def plain(table: Table, names: Sequence[str]) -> _Bulk:
            return _Bulk(d, insert(table), names, _values_sql(d, table, names))

        def upsert(
            table: Table, names: Sequence[str], keys: Sequence[str], fixed: Sequence[str] = ()
        ) -> _Bulk:
            return _Bulk(
                d,
                _upsert(d, table, keys, fixed),
                names,
                _values_sql(d, table, names, keys, update=True, fixed=fixed),
            )

        self.archive = plain(archive, _names(archive))
        self.events = plain(events, _EVENT_COLUMNS)
        self.responses = plain(responses, _RESPONSE_COLUMNS)
        # A submission's identity never changes once created; leaving it out of the
        # update spares the indexes on tracking code and partition a delete and an
        # insert for every changed state.
        self.states = upsert(
            submissions, _SUBMISSION_COLUMNS, ["submission_id"], _SUBMISSION_IDENTITY
        )
        self.votes_set = upsert(votes, _names(votes), ["submission_id", "voter_id"])
        self.checkpoint = upsert(checkpoints, _names(checkpoints), ["partition"])
        self.escalations = _Bulk(
            d,
            _insert_ignore(d, escalations, ["event_id"]),
            _ESCALATION_COLUMNS,
            _values_sql(d, escalations, _ESCALATION_COLUMNS, ["event_id"]),
        )
        self.votes_unset = _Bulk(
            d,
            delete(votes).where(
                votes.c.submission_id == bindparam("b_sid"),
                votes.c.voter_id == bindparam("b_voter"),
            ),
            ("b_sid", "b_voter"),
            "DELETE FROM votes AS v USING (VALUES %s) AS d(sid, voter)"
            " WHERE v.submission_id = d.sid AND v.voter_id = d.voter",
        )


_EVENT_COLUMNS = (
    "key",
    "partition",
    "offset",
    "submission_id",
    "type",
    "time",
    "at",
    "late",
    "effective",
    "note",
)
_SUBMISSION_COLUMNS = (*_STATE_FIELDS, "partition")
_ARCHIVE_ROW = ("partition", "offset", "record", "prev_hash", "hash")
_ARCHIVE_RECORD = ("partition", "offset", "record")
# Fields whose values recur across submissions (strings and instants; not numbers,
# where 0 == False would mix them up).
_STATE_SHARED_POSITIONS = tuple(
    i
    for i, n in enumerate(_STATE_FIELDS)
    if n in ("kind", "channel", "status", "unit_id") or isinstance(submissions.c[n].type, Instant)
)
_SUBMISSION_IDENTITY = ("tracking_code", "kind", "channel", "created_at", "partition")
_RESPONSE_COLUMNS = (
    "key",
    "response_id",
    "submission_id",
    "unit_id",
    "kind",
    "referred_to_unit_id",
    "at",
    "effective",
)
_ESCALATION_COLUMNS = (*_ESCALATION_FIELDS, "published")
_STATE_VALUES = attrgetter(*_STATE_FIELDS)
_STATE_INSTANT_POSITIONS = tuple(
    i for i, n in enumerate(_STATE_FIELDS) if isinstance(submissions.c[n].type, Instant)
)
_ESCALATION_VALUES = attrgetter(*_ESCALATION_FIELDS)
_ESCALATION_INSTANT_POSITIONS = tuple(
    i for i, n in enumerate(_ESCALATION_FIELDS) if isinstance(escalations.c[n].type, Instant)
)


def _instants(values: tuple[Any, ...], positions: tuple[int, ...]) -> list[Any]:
    """``values`` with the instants at ``positions`` in stored form."""
    row = list(values)
    for i in positions:
        value = row[i]
        if value is not None:
            row[i] = format_time(value)
    return row


@dataclasses.dataclass(slots=True)
class _BatchRows:
    events: list[tuple[Any, ...]]
    states: list[tuple[Any, ...]]
    votes_set: list[tuple[Any, ...]]
    votes_unset: list[tuple[Any, ...]]
    responses: list[tuple[Any, ...]]
    escalations: list[tuple[Any, ...]]


def _batch_rows(batch: BatchWrite, states: bool = True) -> _BatchRows:
    """A batch's rows in stored form, built before the transaction opens."""
    p = batch.partition
    text = format_time
    latest = {s.submission_id: s for s in batch.states} if states else {}
    state_rows = [
        (*_instants(_STATE_VALUES(s), _STATE_INSTANT_POSITIONS), p) for s in latest.values()
    ]
    latest_stances = {(sid, voter): (stance, at) for sid, voter, stance, at in batch.stances}
    votes_set = []
    votes_unset = []
    for (sid, voter), (stance, at) in latest_stances.items():
        if stance is None:
            votes_unset.append((sid, voter))
        else:
            votes_set.append((sid, voter, stance, text(at)))
    events_ = [
        (
            a.key,
            p,
            a.offset,
            a.submission_id,
            a.type,
            text(a.time),
            text(a.at),
            a.late,
            a.effective,
            a.note,
        )
        for a in batch.applied
    ]
    responses_ = [
        (
            r.key,
            r.response_id,
            r.submission_id,
            r.unit_id,
            r.kind,
            r.referred_to_unit_id,
            text(at),
            effective,
        )
        for r, at, effective in batch.responses
    ]
    escalations_ = [
        (*_instants(_ESCALATION_VALUES(e), _ESCALATION_INSTANT_POSITIONS), False)
        for e in batch.escalations
    ]
    return _BatchRows(
        events=events_,
        states=state_rows,
        votes_set=votes_set,
        votes_unset=votes_unset,
        responses=responses_,
        escalations=escalations_,
    )


def _plain(value: Any) -> str | int | None:
    """A column value as str/int/None, spelled the same whatever the backend."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    raise TypeError(f"unexpected column value {value!r}")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else format_time(value)


@dataclasses.dataclass(slots=True)
class _Rebuild:
    """The one connection and open transaction of :meth:`SqlStore.rebuilding`."""

    conn: Connection
    thread: int  # only this thread's calls use it
    cache_size: int | None = None  # SQLite: the connection's own, restored at the end
    # Latest state of each submission changed since the last flush, with its partition.
    states: dict[str, tuple[int, SubmissionState]] = dataclasses.field(default_factory=dict)


class SqlStore:
    """The read model, archive and checkpoints in one SQLite or PostgreSQL database."""

    def __init__(self, url: str) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError as e:
            raise StoreError(f"invalid database URL: {e}") from e
        try:
            self.engine = _create_engine(parsed)
        except (SQLAlchemyError, OSError) as e:
            raise StoreError(f"cannot open database: {_describe(e)}") from e
        self.dialect = self.engine.dialect.name
        self.in_memory = _is_memory(parsed)  # no other process can open it
        self._checkpointer: _Checkpointer | None = None
        self.url = parsed.render_as_string(hide_password=True)
        self._driver_error: type[Exception] = self.engine.dialect.loaded_dbapi.Error
        self._bulk = _BulkStatements(self.engine.dialect)
        self._lookups = _Lookups(self.engine.dialect)
        self._rebuild: _Rebuild | None = None

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        self.engine.dispose()

    def checkpoint_in_background(self, interval: float = _CHECKPOINT_SECONDS) -> None:
        """On a SQLite file, checkpoint the WAL from a thread instead of inside commits.

        For the store's one writer (the projector), whose commits are on the
        latency path. Nothing to do for PostgreSQL or in-memory SQLite.
        """
        if self.dialect != "sqlite" or self.in_memory or self._checkpointer is not None:
            return
        event.listen(self.engine, "connect", _no_autocheckpoint)
        self.engine.dispose()  # pooled connections were opened with automatic checkpoints
        url = self.engine.url
        self._checkpointer = _Checkpointer(url.database or "", bool(url.query.get("uri")), interval)

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqlStore({self.url!r})"

    def _rebuilding_here(self) -> _Rebuild | None:
        rebuild = self._rebuild
        if rebuild is not None and rebuild.thread == threading.get_ident():
            return rebuild
        return None

    @contextmanager
    def _reading(self, what: str, states: bool = True) -> Iterator[Connection]:
        """A connection to read with; ``states``: the reads may touch submission states."""
        try:
            rebuild = self._rebuilding_here()
            if rebuild is not None:  # reads must see the writes not committed yet
                if states:
                    self._flush_states(rebuild)
                yield rebuild.conn
                return
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as e:
            raise StoreError(f"{what} failed: {_describe(e)}") from e

    @contextmanager
    def _writing(self, what: str) -> Iterator[Connection]:
        try:
            rebuild = self._rebuilding_here()
            if rebuild is not None:
                # A savepoint: a failed write still leaves nothing of itself behind.
                with rebuild.conn.begin_nested():
                    yield rebuild.conn
                return
            with (
                self.engine.connect().execution_options(**{_WRITE: True}) as conn,
                conn.begin(),
            ):
                yield conn
        except (SQLAlchemyError, self._driver_error) as e:  # the driver's: from _Bulk
            raise StoreError(f"{what} failed: {_describe(e)}") from e

    @contextmanager
    def rebuilding(self) -> Iterator[None]:
        """Write a store that is being rebuilt from scratch (replay) faster.

        Within the block, this thread's writes go through one connection and one
        transaction, committed when the block ends; each :meth:`write` is a
        savepoint, so a failed batch still leaves nothing. Submission states are
        held back and written at the end (or when many are held): a submission
        changed in many batches is written once, and a state the database
        refuses fails the rebuild rather than its batch. Reads of this thread see
        everything written so far; other connections see nothing of it until the
        end.

        SQLite also keeps its rollback journal in memory instead of the WAL when
        no other connection has the file open (pages are written once, not to
        the WAL and again at a checkpoint), stops syncing meanwhile and uses a
        larger page cache. A crash in the block (of the process or the machine)
        may then leave the file corrupt: that is acceptable only for a store
        that would be rebuilt anyway, which is what this is for. On a normal exit
        everything is committed and the file synced before this returns, and the
        store is back in WAL mode; on an exception everything written in the
        block is rolled back.
        """
        if self._rebuild is not None:
            if self._rebuilding_here() is None:
                raise StoreError("the store is being rebuilt by another thread")
            yield  # nested: the outer block commits
            return
        try:
            conn = self.engine.connect().execution_options(**{_WRITE: True})
        except SQLAlchemyError as e:
            raise StoreError(f"opening the store for a rebuild failed: {_describe(e)}") from e
        rebuild = _Rebuild(conn, threading.get_ident())
        sqlite_ = self.dialect == "sqlite" and not self.in_memory  # a file to tune
        try:
            if sqlite_:
                rebuild.cache_size = int(_sqlite_pragma(conn, "cache_size"))
                _sqlite_pragma(conn, f"cache_size=-{_REBUILD_CACHE_KIB}")
                _sqlite_pragma(conn, "synchronous=OFF")
                _sqlite_journal_mode(conn, "MEMORY")  # stays WAL if shared: just slower
            self._rebuild = rebuild
            try:
                yield
                self._flush_states(rebuild)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        except SQLAlchemyError as e:
            raise StoreError(f"rebuilding the store failed: {_describe(e)}") from e
        finally:
            self._rebuild = None
            try:
                if sqlite_ and not conn.closed and not conn.invalidated:
                    if conn.in_transaction():
                        conn.rollback()
                    wal = _sqlite_journal_mode(conn, "WAL") == "wal"
                    _sqlite_sync(conn)  # what was written unsynced is durable from here
                    if wal:
                        _sqlite_pragma(conn, "synchronous=NORMAL")
                        _sqlite_pragma(conn, f"cache_size={rebuild.cache_size}")
                    else:  # another connection came meanwhile: this one is not for reuse
                        conn.invalidate()
            finally:
                conn.close()

    def _written(self, rebuild: _Rebuild, batch: BatchWrite) -> None:
        """Hold back the states of a batch written in a rebuild."""
        held = rebuild.states
        for state in batch.states:
            held[state.submission_id] = (batch.partition, state)
        if len(held) >= _REBUILD_STATES:
            self._flush_states(rebuild)

    def _flush_states(self, rebuild: _Rebuild) -> None:
        """Write the states a rebuild holds back."""
        if not rebuild.states:
            return
        rows = [
            (*_instants(_STATE_VALUES(state), _STATE_INSTANT_POSITIONS), p)
            for p, state in rebuild.states.values()
        ]
        try:
            self._bulk.states.run(rebuild.conn, rows)
        except (SQLAlchemyError, self._driver_error) as e:
            raise StoreError(f"writing states failed: {_describe(e)}") from e
        rebuild.states.clear()

    # -- schema -------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create or upgrade the schema; safe to call again and from several processes."""
        with self._writing("migration") as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            migrations.upgrade(conn)

    # -- ProjectionStore ------------------------------------------------------------------

    def load(self, partition: int) -> tuple[Checkpoint, list[SubmissionState]]:
        """The partition's checkpoint and the states of every submission living in it."""
        with self._reading("loading partition") as conn:
            checkpoint = self._checkpoint(conn, partition)
            rows = conn.execute(
                select(*(submissions.c[f] for f in _STATE_FIELDS)).where(
                    submissions.c.partition == partition
                )
            ).all()
        # Each row comes with its own strings and datetimes; the fold keeps these
        # states for as long as the submissions live, so equal values (kinds,
        # units, statuses, instants) are made one object.
        shared: dict[Any, Any] = {}
        states = []
        for row in rows:
            values = list(row)
            for i in _STATE_SHARED_POSITIONS:
                value = values[i]
                if value is not None:
                    values[i] = shared.setdefault(value, value)
            states.append(SubmissionState(*values))
        states.sort(key=lambda s: s.submission_id)
        return checkpoint, states

    def load_checkpoint(self, partition: int) -> Checkpoint:
        """The partition's checkpoint (the initial one if nothing was written yet)."""
        with self._reading("loading a checkpoint", states=False) as conn:
            return self._checkpoint(conn, partition)

    @staticmethod
    def _checkpoint(conn: Connection, partition: int) -> Checkpoint:
        row = conn.execute(select(checkpoints).where(checkpoints.c.partition == partition)).first()
        if row is None:
            return Checkpoint(partition)
        return Checkpoint(partition, row.next_offset, row.clock, row.head_hash)

    def stances(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Stance]:
        """Current stances of the given (submission id, voter id) pairs that have one."""
        wanted = list(dict.fromkeys(pairs))
        out: dict[tuple[str, str], Stance] = {}
        with self._reading("reading stances", states=False) as conn:
            for chunk in _chunks(wanted, _LOOKUP_CHUNK):
                if self.dialect == "postgresql":
                    params: dict[str, Any] = {
                        "sids": [sid for sid, _ in chunk],
                        "voters": [voter for _, voter in chunk],
                    }
                else:
                    params = {"pairs": orjson.dumps(chunk).decode()}
                for sid, voter, stance in conn.execute(self._lookups.stances, params):
                    out[(sid, voter)] = stance
        return out

    def seen(self, keys: Iterable[str]) -> set[str]:
        """Those of ``keys`` already applied (present in the ledger)."""
        wanted = list(dict.fromkeys(keys))
        out: set[str] = set()
        with self._reading("reading the ledger", states=False) as conn:
            for chunk in _chunks(wanted, _LOOKUP_CHUNK):
                param = (
                    list(chunk) if self.dialect == "postgresql" else orjson.dumps(chunk).decode()
                )
                out.update(conn.scalars(self._lookups.seen, {"keys": param}))
        return out

    def write(self, batch: BatchWrite) -> Checkpoint:
        """Write one projector batch and its checkpoint atomically.

        Archive records continue the partition's hash chain from the stored
        head hash; the checkpoint's ``head_hash`` becomes the last hash written
        (the one in ``batch.checkpoint`` is not used). Archive offsets must rise
        and start at or after the stored checkpoint's ``next_offset`` (a writer
        working from a stale checkpoint is refused); an archive offset or event
        key written before makes the whole batch fail with nothing written.
        Several changes to one state or one stance in a batch: the last wins.
        Returns the checkpoint as now stored.
        """
        p = batch.partition
        if batch.checkpoint.partition != p:
            raise StoreError(
                f"batch for partition {p} carries the checkpoint of {batch.checkpoint.partition}"
            )
        offsets = [o for o, _ in batch.archive]
        if any(b <= a for a, b in pairwise(offsets)):
            raise StoreError(f"partition {p}: archive offsets of a batch must rise")
        rebuild = self._rebuilding_here()
        rows = _batch_rows(batch, states=rebuild is None)
        bulk = self._bulk
        with self._writing(f"writing a batch of partition {p}") as conn:
            current = self._checkpoint(conn, p)
            if offsets and offsets[0] < current.next_offset:
                raise StoreError(
                    f"partition {p}: batch starts at offset {offsets[0]}, "
                    f"but offsets before {current.next_offset} are already written"
                )
            head = current.head_hash
            sealed = []
            for offset, record in batch.archive:
                h = chain_hash(head, p, offset, record)
                sealed.append((p, offset, record, head, h))
                head = h
            bulk.archive.run(conn, sealed)
            bulk.events.run(conn, rows.events)
            bulk.states.run(conn, rows.states)  # none while rebuilding: held back
            bulk.votes_set.run(conn, rows.votes_set)
            bulk.votes_unset.run(conn, rows.votes_unset)
            bulk.responses.run(conn, rows.responses)
            bulk.escalations.run(conn, rows.escalations)
            clock = batch.checkpoint.clock
            bulk.checkpoint.run(conn, [(p, batch.checkpoint.next_offset, _text(clock), head)])
        if rebuild is not None:
            self._written(rebuild, batch)
        return Checkpoint(
            p, batch.checkpoint.next_offset, None if clock is None else utc(clock), head
        )

    def unpublished_escalations(self, limit: int = 1000) -> list[Escalated]:
        """Escalations not yet published, oldest first (per submission, in level order)."""
        with self._reading("reading the escalation outbox", states=False) as conn:
            rows = conn.execute(
                select(*(escalations.c[f] for f in _ESCALATION_FIELDS))
                .where(escalations.c.published == false())
                .order_by(
                    escalations.c.time,
                    escalations.c.submission_id,
                    escalations.c.to_level,
                    escalations.c.event_id,
                )
                .limit(limit)
            ).all()
        return [Escalated(**row._mapping) for row in rows]

    def mark_published(self, event_ids: Iterable[str]) -> None:
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return
        with self._writing("marking escalations published") as conn:
            for chunk in _chunks(ids):
                conn.execute(
                    update(escalations)
                    .where(escalations.c.event_id.in_(chunk))
                    .values(published=true())
                )

    # -- reads --------------------------------------------------------------------------

    def submission_by_code(self, code: str) -> dict[str, Any] | None:
        """What the author sees for a tracking code (ASCII digits), or None if unknown."""
        with self._reading("looking up a tracking code") as conn:
            s = conn.execute(select(submissions).where(submissions.c.tracking_code == code)).first()
            if s is None:
                return None
            rs = conn.execute(
                select(responses, events.c.offset)
                .join_from(responses, events, responses.c.key == events.c.key, isouter=True)
                .where(responses.c.submission_id == s.submission_id)
                .order_by(responses.c.at, events.c.offset, responses.c.key)
            ).all()
            es = conn.execute(
                select(escalations)
                .where(escalations.c.submission_id == s.submission_id)
                .order_by(escalations.c.to_level, escalations.c.time, escalations.c.event_id)
            ).all()
        return {
            "submission_id": s.submission_id,
            "tracking_code": s.tracking_code,
            "kind": s.kind,
            "channel": s.channel,
            "status": s.status,
            "unit_id": s.unit_id,
            "level": s.level,
            "support": s.support,
            "oppose": s.oppose,
            "deadlines": {
                "first_response": _iso(s.first_response_due),
                "resolution": _iso(s.resolution_due),
            },
            "overdue": {
                "first_response": s.first_response_overdue,
                "resolution": s.resolution_overdue,
            },
            "created_at": _iso(s.created_at),
            "arrived_at": _iso(s.arrived_at),
            "first_response_at": _iso(s.first_response_at),
            "closed_at": _iso(s.closed_at),
            "updated_at": _iso(s.updated_at),
            "satisfaction": s.satisfaction,
            "responses": [
                {
                    "response_id": r.response_id,
                    "unit_id": r.unit_id,
                    "kind": r.kind,
                    "referred_to_unit_id": r.referred_to_unit_id,
                    "at": _iso(r.at),
                    "effective": r.effective,
                }
                for r in rs
            ],
            "escalations": [
                {
                    "event_id": e.event_id,
                    "time": _iso(e.time),
                    "from_level": e.from_level,
                    "to_level": e.to_level,
                    "from_unit_id": e.from_unit_id,
                    "to_unit_id": e.to_unit_id,
                    "reason": e.reason,
                    "support": e.support,
                    "deadline": _iso(e.deadline),
                }
                for e in es
            ],
        }

    def timeline(self, submission_id: str) -> list[dict[str, Any]]:
        """Every applied event of a submission in log order, with its archived CloudEvent.

        ``event`` is None when the archive holds no readable record at that offset.
        """
        with self._reading("reading a timeline", states=False) as conn:
            rows = conn.execute(
                select(events, archive.c.record)
                .join_from(
                    events,
                    archive,
                    (archive.c.partition == events.c.partition)
                    & (archive.c.offset == events.c.offset),
                    isouter=True,
                )
                .where(events.c.submission_id == submission_id)
                .order_by(events.c.partition, events.c.offset)
            ).all()
        return [
            {
                "key": r.key,
                "partition": r.partition,
                "offset": r.offset,
                "type": r.type,
                "time": _iso(r.time),
                "at": _iso(r.at),
                "late": r.late,
                "effective": r.effective,
                "note": r.note,
                "event": _cloud_event(r.record),
            }
            for r in rows
        ]

    def iter_archive(self, partition: int | None = None) -> Iterator[ArchiveRow]:
        """Archived records in (partition, offset) order, streamed."""
        for p, o, record, prev_hash, h in self._stream_archive(_ARCHIVE_ROW, partition):
            yield ArchiveRow(p, o, bytes(record), prev_hash, h)

    def iter_records(self, partition: int | None = None) -> Iterator[tuple[int, int, bytes]]:
        """``(partition, offset, record)`` of archived records in that order, streamed."""
        for p, o, record in self._stream_archive(_ARCHIVE_RECORD, partition):
            yield p, o, bytes(record)

    def _stream_archive(
        self, names: Sequence[str], partition: int | None
    ) -> Iterator[tuple[Any, ...]]:
        stmt = select(*(archive.c[n] for n in names)).order_by(
            archive.c.partition, archive.c.offset
        )
        if partition is not None:
            stmt = stmt.where(archive.c.partition == partition)
        what = "reading the archive"
        try:
            with self.engine.connect() as conn:
                if self.dialect != "sqlite":
                    result = conn.execution_options(yield_per=2000).execute(stmt)
                    for row in result:
                        yield tuple(row)
                    return
                # The driver's own cursor: SQLAlchemy's processing of each row cost
                # more than SQLite's reading it. In autocommit mode (see
                # _sqlite_on_connect) the one SELECT reads one snapshot.
                compiled = stmt.compile(dialect=self.engine.dialect)
                params = [compiled.params[n] for n in compiled.positiontup or ()]
                raw = conn.connection.dbapi_connection
                assert raw is not None
                cursor = raw.cursor()
                try:
                    cursor.execute(str(compiled), params)
                    while rows := cursor.fetchmany(2000):
                        yield from rows
                finally:
                    cursor.close()
        except (SQLAlchemyError, self._driver_error) as e:
            raise StoreError(f"{what} failed: {_describe(e)}") from e

    def checkpoints(self) -> list[Checkpoint]:
        with self._reading("reading checkpoints", states=False) as conn:
            rows = conn.execute(select(checkpoints).order_by(checkpoints.c.partition)).all()
        return [Checkpoint(r.partition, r.next_offset, r.clock, r.head_hash) for r in rows]

    def verify_archive(self, partition: int | None = None) -> VerifyReport:
        """Check every chain, and that each chain still holds its checkpoint's head hash.

        Checkpoints are read before the archive, so batches committed meanwhile
        only add records after the heads.
        """
        heads = {
            c.partition: c.head_hash
            for c in self.checkpoints()
            if partition is None or c.partition == partition
        }
        return verify(self.iter_archive(partition), heads)

    def dump(self) -> dict[str, list[tuple[str | int | None, ...]]]:
        """Every stored row, as plain values in primary-key order: equal dumps, equal state.

        Escalations leave out ``published`` (delivery bookkeeping, not state);
        archive records are hex. Sorting happens here, not in SQL, so that
        database collations cannot reorder rows.
        """
        out: dict[str, list[tuple[str | int | None, ...]]] = {}
        with self._reading("dumping the store") as conn:
            for table in STATE_TABLES:
                cols = [c for c in table.c if not (table is escalations and c.name == "published")]
                pk = [i for i, c in enumerate(cols) if c.primary_key]
                rows = [tuple(_plain(v) for v in row) for row in conn.execute(select(*cols)).all()]
                rows.sort(key=lambda r: tuple(r[i] for i in pk))
                out[table.name] = rows
        return out

    # -- operations view: read-only queries for /metrics and /dashboard -----------------
    # (consumers/snapshot.py turns these rows into SLA gauges and the units' ranking.)

    def sla_counts(
        self,
        clock: datetime | None,
        at_risk_by: dict[str, tuple[datetime | None, datetime | None]],
    ) -> tuple[dict[tuple[str, str, str], int], dict[tuple[str, str], int]]:
        """Open submissions by (unit, kind, SLA status); closed ones by (unit, kind).

        The status of an open submission, first match wins: ``overdue`` when a
        deadline has passed (an overdue flag is set, or a running deadline is
        before ``clock``); ``at_risk`` when a running clock started at or before
        the cutoff of its kind in ``at_risk_by`` (first response, resolution;
        ``None``: never at risk); else ``on_time``. Without ``clock`` only the
        flags make a submission overdue.
        """
        from sqlalchemy import and_, case, func, or_

        s = submissions.c
        overdue = or_(s.first_response_overdue == true(), s.resolution_overdue == true())
        if clock is not None:
            overdue = or_(
                overdue,
                and_(s.first_response_due.is_not(None), s.first_response_due < clock),
                and_(s.resolution_due.is_not(None), s.resolution_due < clock),
            )
        risky = []
        for kind, (first_by, resolution_by) in sorted(at_risk_by.items()):
            running = []
            if first_by is not None:
                running.append(and_(s.first_response_due.is_not(None), s.arrived_at <= first_by))
            if resolution_by is not None:
                running.append(and_(s.resolution_due.is_not(None), s.arrived_at <= resolution_by))
            if running:
                risky.append(and_(s.kind == kind, or_(*running)))
        at_risk = or_(*risky) if risky else false()
        status = case((overdue, "overdue"), (at_risk, "at_risk"), else_="on_time")
        # Grouped in an outer query: PostgreSQL cannot match a GROUP BY expression
        # carrying bound parameters to the same expression in the select list.
        inner = select(s.unit_id, s.kind, status.label("sla")).where(s.status == "open").subquery()
        with self._reading("counting submissions by SLA status") as conn:
            open_rows = conn.execute(
                select(inner.c.unit_id, inner.c.kind, inner.c.sla, func.count()).group_by(
                    inner.c.unit_id, inner.c.kind, inner.c.sla
                )
            ).all()
            closed_rows = conn.execute(
                select(s.unit_id, s.kind, func.count())
                .where(s.status == "closed")
                .group_by(s.unit_id, s.kind)
            ).all()
        return (
            {(u, k, st): int(n) for u, k, st, n in open_rows},
            {(u, k): int(n) for u, k, n in closed_rows},
        )

    def unit_history(self) -> dict[str, list[Any]]:
        """What the units' ranking is computed from, as rows with named columns.

        - ``submissions``: submission_id, kind, status, unit_id (now), created_at,
          first_response_overdue, satisfaction;
        - ``origins``: submission_id, unit_id: the unit a submission was created
          at, read from its archived ``submission.created`` event, for those that
          have moved since (escalated or referred);
        - ``escalations``: submission_id, time, to_level, from_unit_id,
          to_unit_id, reason;
        - ``responses``: the effective ones: submission_id, at, offset, unit_id,
          kind, referred_to_unit_id, in log order.
        """
        from sqlalchemy import ColumnElement, Text, and_, cast, func, union
        from sqlalchemy.dialects.postgresql import JSONB

        s, e, r = submissions.c, escalations.c, responses.c
        origin: ColumnElement[Any]
        if self.dialect == "postgresql":
            origin = (
                func.convert_from(archive.c.record, "UTF8")
                .cast(JSONB)
                .op("#>>")("{event,data,unit_id}")
            )
        else:
            origin = func.json_extract(cast(archive.c.record, Text), "$.event.data.unit_id")
        moved = union(
            select(e.submission_id),
            select(r.submission_id).where(r.kind == "referral", r.effective == true()),
        ).subquery()
        with self._reading("reading unit history") as conn:
            subs = conn.execute(
                select(
                    s.submission_id,
                    s.kind,
                    s.status,
                    s.unit_id,
                    s.created_at,
                    s.first_response_overdue,
                    s.satisfaction,
                ).order_by(s.submission_id)
            ).all()
            origins = conn.execute(
                select(events.c.submission_id, origin.label("unit_id"))
                .join_from(
                    events,
                    archive,
                    and_(
                        archive.c.partition == events.c.partition,
                        archive.c.offset == events.c.offset,
                    ),
                )
                .where(
                    events.c.type == "sada.submission.created",
                    events.c.submission_id.in_(select(moved.c.submission_id)),
                )
            ).all()
            escs = conn.execute(
                select(
                    e.submission_id, e.time, e.to_level, e.from_unit_id, e.to_unit_id, e.reason
                ).order_by(e.submission_id, e.time, e.to_level)
            ).all()
            resps = conn.execute(
                select(
                    r.submission_id,
                    r.at,
                    events.c.offset,
                    r.unit_id,
                    r.kind,
                    r.referred_to_unit_id,
                )
                .join_from(responses, events, r.key == events.c.key, isouter=True)
                .where(r.effective == true())
                .order_by(r.submission_id, r.at, events.c.offset, r.key)
            ).all()
        return {
            "submissions": list(subs),
            "origins": list(origins),
            "escalations": list(escs),
            "responses": list(resps),
        }


def _cloud_event(record: bytes | None) -> dict[str, Any] | None:
    if record is None:
        return None
    try:
        obj = orjson.loads(record)
    except orjson.JSONDecodeError:
        return None
    ce = obj.get("event") if isinstance(obj, dict) else None
    return ce if isinstance(ce, dict) else None

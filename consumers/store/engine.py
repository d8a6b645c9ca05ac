"""Opening the store's database: URL to engine, SQLite's tuning, the background WAL checkpointer.

SQLite (the embedded default) runs in WAL mode and write transactions take the
write lock up front (``BEGIN IMMEDIATE``), so several processes can share one
file without failing on lock upgrades. A connection that will write says so
with the execution option :data:`WRITE`. PostgreSQL is the production
database; with psycopg2 its executemany is batched.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.pool import StaticPool

from sada.pipeline.domain.errors import StoreError

WRITE = "sada_write"  # execution option: this connection will write
CHECKPOINT_SECONDS = 1.0  # how often the background checkpointer moves the WAL into the file
_BUSY_TIMEOUT_MS = 30_000  # SQLite: how long a statement waits for another connection's lock
log = logging.getLogger(__name__)


def describe(e: BaseException) -> str:
    """One line: the driver's own message when there is one."""
    cause = getattr(e, "orig", None) or e
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"


def is_memory(url: URL) -> bool:
    """Whether ``url`` names an in-memory SQLite database (no other process can open it)."""
    db = url.database or ""
    return db in ("", ":memory:") or url.query.get("mode") == "memory"


def create(url: URL) -> Engine:
    """The engine for ``url``, tuned for its dialect; a StoreError for any other database."""
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
    if is_memory(url):
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        if not url.query.get("uri"):
            Path(url.database or "").parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def driver_cursor(conn: Connection) -> closing[Any]:
    """A cursor of the driver's own connection under ``conn``, closed on leaving the block."""
    raw = conn.connection.dbapi_connection
    assert raw is not None
    return closing(raw.cursor())


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own transaction handling skips BEGIN for DDL and SELECT and
    # cannot BEGIN IMMEDIATE; _sqlite_on_begin emits BEGIN instead.
    dbapi_connection.isolation_level = None
    with closing(dbapi_connection.cursor()) as cursor:
        # First: switching to WAL may wait.
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=OFF")
        # The projector, the one heavy writer, checkpoints from a thread of its own
        # (SqlStore.checkpoint_in_background); other writers keep SQLite's automatic
        # checkpoint. After a burst the WAL is truncated back to 64 MiB.
        cursor.execute("PRAGMA journal_size_limit=67108864")


def _sqlite_on_begin(conn: Connection) -> None:
    # A writer takes the lock at BEGIN: a deferred transaction that reads first
    # fails outright (not after the busy timeout) if another writer got there first.
    immediate = conn.get_execution_options().get(WRITE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def sqlite_pragma(conn: Connection, pragma: str) -> Any:
    """Run ``PRAGMA pragma`` on the driver's connection; the first value it returns, if any.

    Straight to the driver: through SQLAlchemy the statement would open a
    transaction first, and some pragmas cannot change inside one.
    """
    with driver_cursor(conn) as cursor:
        row = cursor.execute(f"PRAGMA {pragma}").fetchone()
    return None if row is None else row[0]


def sqlite_journal_mode(conn: Connection, mode: str) -> str:
    """Switch the journal mode if no other connection has the file open; the mode now.

    Leaving WAL mode, or entering it, needs the file to itself: with another
    connection open the switch fails at once (no busy wait) and nothing changes.
    """
    sqlite_pragma(conn, "busy_timeout=0")
    try:
        sqlite_pragma(conn, f"journal_mode={mode}")
    except sqlite3.OperationalError:
        pass
    finally:
        sqlite_pragma(conn, f"busy_timeout={_BUSY_TIMEOUT_MS}")
    return str(sqlite_pragma(conn, "journal_mode")).lower()


def sqlite_sync(conn: Connection) -> None:
    """fsync the main database file (nothing to do for an in-memory database)."""
    with driver_cursor(conn) as cursor:
        files = [row[2] for row in cursor.execute("PRAGMA database_list") if row[1] == "main"]
    if files and files[0]:
        fd = os.open(files[0], os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def checkpoint_in_background(engine: Engine, interval: float) -> Checkpointer:
    """Stop ``engine``'s connections checkpointing in their commits; a thread does it instead.

    Pooled connections were opened with automatic checkpoints, so the pool
    is emptied.
    """
    event.listen(engine, "connect", _no_autocheckpoint)
    engine.dispose()
    url = engine.url
    return Checkpointer(url.database or "", bool(url.query.get("uri")), interval)


def _no_autocheckpoint(dbapi_connection: Any, _record: Any) -> None:
    with closing(dbapi_connection.cursor()) as cursor:
        cursor.execute("PRAGMA wal_autocheckpoint=0")


class Checkpointer:
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
        connection = sqlite3.connect(self._database, uri=self._uri, check_same_thread=False)
        with closing(connection) as conn:
            while not self._stop.wait(self._interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as e:  # the next round tries again; writers are unaffected
                    log.warning("WAL checkpoint of %s failed: %s", self._database, e)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

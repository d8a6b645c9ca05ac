"""Replay's rebuild mode: one connection, one transaction, states held back, SQLite untethered.

A store rebuilt from scratch is written much faster this way (see
:meth:`SqlStore.rebuilding <sada.consumers.store.base.StoreBase.rebuilding>`
for what a caller may rely on). A commit writes every page its batches
dirtied, and rows with random keys (event keys, submission ids) dirty about
one page of each index apiece once an index outgrows a batch: committing
every batch made the cost per record grow with the store. One transaction,
and a cache holding the pages it dirties, write most pages once.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from sada.consumers.store.engine import (
    WRITE,
    describe,
    sqlite_journal_mode,
    sqlite_pragma,
    sqlite_sync,
)
from sada.consumers.store.rows import state_row
from sada.consumers.store.statements import Bulk
from sada.pipeline.domain.errors import StoreError
from sada.pipeline.domain.model import SubmissionState
from sada.pipeline.domain.ports import BatchWrite

# The SQLite page cache while rebuilding, and how many states are held back at most.
_CACHE_KIB = 128 * 1024
_HELD_STATES = 200_000


@dataclasses.dataclass(slots=True)
class Rebuild:
    """The one connection and open transaction of a rebuild, and the states it holds back."""

    conn: Connection
    thread: int  # only this thread's calls use it
    write_states: Bulk
    driver_error: type[Exception]
    cache_size: int | None = None  # SQLite: the connection's own, restored at the end
    # Latest state of each submission changed since the last flush, with its partition.
    states: dict[str, tuple[int, SubmissionState]] = dataclasses.field(default_factory=dict)

    def hold(self, batch: BatchWrite) -> None:
        """Hold back the states of a batch written in this rebuild."""
        held = self.states
        for state in batch.states:
            held[state.submission_id] = (batch.partition, state)
        if len(held) >= _HELD_STATES:
            self.flush()

    def flush(self) -> None:
        """Write the states held back."""
        if not self.states:
            return
        rows = [state_row(state, p) for p, state in self.states.values()]
        try:
            self.write_states.run(self.conn, rows)
        except (SQLAlchemyError, self.driver_error) as e:
            raise StoreError(f"writing states failed: {describe(e)}") from e
        self.states.clear()


@contextmanager
def rebuild_transaction(
    engine: Engine, sqlite_file: bool, write_states: Bulk, driver_error: type[Exception]
) -> Iterator[Rebuild]:
    """A rebuild of ``engine``'s database, committed when the block ends without an exception.

    ``sqlite_file``: the database is a SQLite file, tuned for the rebuild and
    synced and given back its WAL mode at the end.
    """
    try:
        conn = engine.connect().execution_options(**{WRITE: True})
    except SQLAlchemyError as e:
        raise StoreError(f"opening the store for a rebuild failed: {describe(e)}") from e
    rebuild = Rebuild(conn, threading.get_ident(), write_states, driver_error)
    try:
        if sqlite_file:
            rebuild.cache_size = int(sqlite_pragma(conn, "cache_size"))
            sqlite_pragma(conn, f"cache_size=-{_CACHE_KIB}")
            sqlite_pragma(conn, "synchronous=OFF")
            sqlite_journal_mode(conn, "MEMORY")  # stays WAL if shared: just slower
        try:
            yield rebuild
            rebuild.flush()
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    except SQLAlchemyError as e:
        raise StoreError(f"rebuilding the store failed: {describe(e)}") from e
    finally:
        try:
            if sqlite_file and not conn.closed and not conn.invalidated:
                _untune(rebuild)
        finally:
            conn.close()


def _untune(rebuild: Rebuild) -> None:
    """Give a rebuild's SQLite connection back its WAL mode, cache and syncing."""
    conn = rebuild.conn
    if conn.in_transaction():
        conn.rollback()
    wal = sqlite_journal_mode(conn, "WAL") == "wal"
    sqlite_sync(conn)  # what was written unsynced is durable from here
    if wal:
        sqlite_pragma(conn, "synchronous=NORMAL")
        sqlite_pragma(conn, f"cache_size={rebuild.cache_size}")
    else:  # another connection came meanwhile: this one is not for reuse
        conn.invalidate()

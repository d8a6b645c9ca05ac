"""What every part of the store stands on: the database handle and the connection of each call.

A call reads or writes through a connection of its own, except on the thread
that is rebuilding the store (:meth:`StoreBase.rebuilding`): there every call
goes through the rebuild's one transaction. SQLAlchemy's errors, and the
driver's from the bulk paths, leave as
:class:`sada.pipeline.domain.errors.StoreError`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Self

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from sada.consumers import migrations
from sada.consumers.store import engine as engine_
from sada.consumers.store.engine import CHECKPOINT_SECONDS, WRITE, Checkpointer, describe
from sada.consumers.store.rebuild import Rebuild, rebuild_transaction
from sada.consumers.store.statements import BulkStatements, Lookups
from sada.pipeline.domain.errors import StoreError

_MIGRATION_LOCK = 0x5ADA0001  # PostgreSQL advisory lock key: one migrator at a time


class StoreBase:
    """An open SQLite or PostgreSQL database, and the connections the store's calls use."""

    def __init__(self, url: str) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError as e:
            raise StoreError(f"invalid database URL: {e}") from e
        try:
            self.engine = engine_.create(parsed)
        except (SQLAlchemyError, OSError) as e:
            raise StoreError(f"cannot open database: {describe(e)}") from e
        self.dialect = self.engine.dialect.name
        self.in_memory = engine_.is_memory(parsed)  # no other process can open it
        self._checkpointer: Checkpointer | None = None
        self.url = parsed.render_as_string(hide_password=True)
        self._driver_error: type[Exception] = self.engine.dialect.loaded_dbapi.Error
        self._bulk = BulkStatements(self.engine.dialect)
        self._lookups = Lookups(self.engine.dialect)
        self._rebuild: Rebuild | None = None

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        self.engine.dispose()

    def checkpoint_in_background(self, interval: float = CHECKPOINT_SECONDS) -> None:
        """On a SQLite file, checkpoint the WAL from a thread instead of inside commits.

        For the store's one writer (the projector), whose commits are on the
        latency path. Nothing to do for PostgreSQL or in-memory SQLite.
        """
        if self.dialect != "sqlite" or self.in_memory or self._checkpointer is not None:
            return
        self._checkpointer = engine_.checkpoint_in_background(self.engine, interval)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def migrate(self) -> None:
        """Create or upgrade the schema; safe to call again and from several processes."""
        with self._writing("migration") as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
            migrations.upgrade(conn)

    def _rebuilding_here(self) -> Rebuild | None:
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
                    rebuild.flush()
                yield rebuild.conn
                return
            with self.engine.connect() as conn:
                yield conn
        except SQLAlchemyError as e:
            raise StoreError(f"{what} failed: {describe(e)}") from e

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
                self.engine.connect().execution_options(**{WRITE: True}) as conn,
                conn.begin(),
            ):
                yield conn
        except (SQLAlchemyError, self._driver_error) as e:  # the driver's: from the bulk paths
            raise StoreError(f"{what} failed: {describe(e)}") from e

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
        sqlite_file = self.dialect == "sqlite" and not self.in_memory
        try:
            with rebuild_transaction(
                self.engine, sqlite_file, self._bulk.states, self._driver_error
            ) as rebuild:
                self._rebuild = rebuild
                yield
        finally:
            self._rebuild = None

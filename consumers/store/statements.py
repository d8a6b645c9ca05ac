"""The projector's statements, prepared once per dialect: bulk writes and batch lookups.

Writes take rows already in stored form (:mod:`.rows`) and spend as little
as the driver allows on each; lookups take a whole batch of keys in one
parameter. Both spell their SQL for SQLite or PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from typing import Any

import orjson
from sqlalchemy import Connection, Dialect, Table, delete, insert, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql import bindparam
from sqlalchemy.sql.dml import UpdateBase

from sada.consumers.store.rows import (
    ESCALATION_COLUMNS,
    EVENT_COLUMNS,
    RESPONSE_COLUMNS,
    SUBMISSION_COLUMNS,
    SUBMISSION_IDENTITY,
)
from sada.consumers.tables import (
    archive,
    checkpoints,
    escalations,
    events,
    merkle_nodes,
    responses,
    submissions,
    votes,
)


class Bulk:
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

            # The DBAPI cursor, inside this transaction.
            with closing(conn.connection.cursor()) as cursor:
                execute_values(cursor, self.values_sql, rows, page_size=1000)
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


class BulkStatements:
    """The statements of a batch write, one per table."""

    def __init__(self, d: Dialect) -> None:
        def plain(table: Table, names: Sequence[str]) -> Bulk:
            return Bulk(d, insert(table), names, _values_sql(d, table, names))

        def upsert(
            table: Table, names: Sequence[str], keys: Sequence[str], fixed: Sequence[str] = ()
        ) -> Bulk:
            return Bulk(
                d,
                _upsert(d, table, keys, fixed),
                names,
                _values_sql(d, table, names, keys, update=True, fixed=fixed),
            )

        self.archive = plain(archive, _names(archive))
        self.merkle_nodes = plain(merkle_nodes, _names(merkle_nodes))
        self.events = plain(events, EVENT_COLUMNS)
        self.responses = plain(responses, RESPONSE_COLUMNS)
        # Leaving a submission's identity out of the update spares the indexes on
        # tracking code and partition a delete and an insert for every changed state.
        self.states = upsert(
            submissions, SUBMISSION_COLUMNS, ["submission_id"], SUBMISSION_IDENTITY
        )
        self.votes_set = upsert(votes, _names(votes), ["submission_id", "voter_id"])
        self.checkpoint = upsert(checkpoints, _names(checkpoints), ["partition"])
        self.escalations = Bulk(
            d,
            _insert_ignore(d, escalations, ["event_id"]),
            ESCALATION_COLUMNS,
            _values_sql(d, escalations, ESCALATION_COLUMNS, ["event_id"]),
        )
        self.votes_unset = Bulk(
            d,
            delete(votes).where(
                votes.c.submission_id == bindparam("b_sid"),
                votes.c.voter_id == bindparam("b_voter"),
            ),
            ("b_sid", "b_voter"),
            "DELETE FROM votes AS v USING (VALUES %s) AS d(sid, voter)"
            " WHERE v.submission_id = d.sid AND v.voter_id = d.voter",
        )


class Lookups:
    """The projector's prefetch queries: a whole batch of keys in one parameter.

    A row-value ``IN`` list makes SQLite scan the whole votes table, so the
    keys travel as one JSON array (SQLite, walked with ``json_each``, which
    drives the join) or as arrays (PostgreSQL, ``unnest``/``ANY``), and every
    key is one primary-key probe.
    """

    def __init__(self, dialect: Dialect) -> None:
        self._arrays = dialect.name == "postgresql"
        if self._arrays:
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

    def seen_params(self, keys: Sequence[str]) -> dict[str, Any]:
        """The parameters of :attr:`seen` for ``keys``."""
        return {"keys": list(keys) if self._arrays else orjson.dumps(keys).decode()}

    def stances_params(self, pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
        """The parameters of :attr:`stances` for (submission id, voter id) ``pairs``."""
        if self._arrays:
            return {"sids": [sid for sid, _ in pairs], "voters": [voter for _, voter in pairs]}
        return {"pairs": orjson.dumps(pairs).decode()}

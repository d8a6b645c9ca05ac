"""The submissions' titles and bodies, as sent, and the search key they are found by.

The projector's state holds no text, so the work queue reads titles and bodies
from ``submission_texts``, filled from the archived ``submission.created``
records:

- :func:`submission_text_rows` turns archived records into rows (for a writer
  that has the records at hand, such as the projector's batch write);
- :meth:`Texts.sync_texts` is a pass of its own that reads the archive past a
  per-partition watermark (``text_sync``) and inserts what is missing, so the
  texts are complete whoever wrote the archive.

Rows are only ever inserted, never updated: the first ``created`` record of a
submission wins, as it does in the fold. ``search_key`` is
:func:`~sada.pipeline.domain.text.normalize_for_search` of title and body:
a comparison key, never shown. SQLite indexes it in an FTS5 table with the
trigram tokenizer (``submission_search``, filled by a trigger); PostgreSQL in
a ``pg_trgm`` GIN index where the extension can be created. Both answer
``LIKE '%token%'`` on the same key, so the two backends find the same
submissions by construction.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import Any, Final, TypeVar

import orjson
from sqlalchemy import BigInteger, Column, Connection, Integer, Table, Text, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from sada.consumers.store.base import StoreBase
from sada.consumers.tables import archive, metadata
from sada.pipeline.domain.model import SUBMISSION_CREATED
from sada.pipeline.domain.text import normalize_for_search

# Dialect-specific search structures (SQLite's FTS5 table and its shadow
# tables, PostgreSQL's trigram index) are named with this prefix and are not
# part of ``metadata``: schema comparisons leave them out.
SEARCH_PREFIX: Final = "submission_search"
# Every schema object named so is left out of schema comparisons: the search
# structures, and the work queue's expression index (metadata cannot spell it).
UNLISTED_PREFIXES: Final = (SEARCH_PREFIX, "ix_work_queue_")
_SYNC_BATCH = 2000
T = TypeVar("T")

submission_texts = Table(
    "submission_texts",
    metadata,
    Column("submission_id", Text, primary_key=True),
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("language", Text),
    Column("search_key", Text, nullable=False),
)

text_sync = Table(
    "text_sync",
    metadata,
    Column("partition", Integer, primary_key=True, autoincrement=False),
    Column("next_offset", BigInteger, nullable=False),
)

TEXT_COLUMNS: Final = ("submission_id", "title", "body", "language", "search_key")


def search_key(title: str, body: str) -> str:
    """The key a submission is searched by: its title and body, normalised for comparison."""
    return normalize_for_search(f"{title}\n{body}")


def search_tokens(query: str) -> list[str]:
    """The tokens of a search: normalised like the key, LIKE's wildcards taken as spaces."""
    cleaned = normalize_for_search(query).translate(str.maketrans("%_\\", "   "))
    return list(dict.fromkeys(cleaned.split()))


def text_row(ce: dict[str, Any]) -> dict[str, Any] | None:
    """The ``submission_texts`` row of a ``submission.created`` CloudEvent, else None."""
    if ce.get("type") != SUBMISSION_CREATED:
        return None
    data = ce.get("data") or {}
    sid = data.get("submission_id")
    if not isinstance(sid, str):
        return None
    title = str(data.get("title") or "")
    body = str(data.get("body") or "")
    language = data.get("language")
    return {
        "submission_id": sid,
        "title": title,
        "body": body,
        "language": language if isinstance(language, str) else None,
        "search_key": search_key(title, body),
    }


def submission_text_rows(records: Iterable[bytes]) -> list[dict[str, Any]]:
    """The text rows of the ``submission.created`` events among archived log records.

    For a writer that has a batch's archive records in hand: insert the rows
    with :meth:`Texts.insert_texts` in the same transaction.
    """
    rows: dict[str, dict[str, Any]] = {}
    for raw in records:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(obj, dict) or obj.get("kind") != "event":
            continue
        event = obj.get("event")
        row = text_row(event) if isinstance(event, dict) else None
        if row is not None:
            rows.setdefault(row["submission_id"], row)
    return list(rows.values())


class Texts(StoreBase):
    """Titles, bodies and search keys, kept up with the archive."""

    _sync_lock = threading.Lock()

    def insert_texts(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Insert text rows that are not there yet (the first text of a submission stays).

        ``ON CONFLICT DO NOTHING``: two processes indexing at once both succeed.
        """
        for chunk in _chunks(rows, 500):
            conn.execute(_insert(self.dialect, submission_texts).on_conflict_do_nothing(), chunk)

    def submission_text(self, submission_id: str) -> dict[str, Any] | None:
        """The title, body and language of a submission as sent, if indexed."""
        t = submission_texts.c
        with self._reading("reading a submission's text", states=False) as conn:
            row = conn.execute(
                select(t.title, t.body, t.language).where(t.submission_id == submission_id)
            ).first()
        return None if row is None else dict(row._mapping)

    def sync_texts(self) -> int:
        """Bring ``submission_texts`` up to the archive; returns the rows added.

        Reads only archive records past each partition's watermark. A watermark
        beyond the archive's end (a store rebuilt from scratch) starts over.
        """
        added = 0
        with self._sync_lock:
            with self._reading("reading the text watermarks", states=False) as conn:
                heads: dict[int, int] = dict(
                    conn.execute(
                        select(archive.c.partition, func.max(archive.c.offset)).group_by(
                            archive.c.partition
                        )
                    ).all()
                )
                marks = {
                    int(p): int(n)
                    for p, n in conn.execute(select(text_sync.c.partition, text_sync.c.next_offset))
                }
            for partition, head in sorted(heads.items()):
                mark = marks.get(partition, 0)
                if mark > head + 1:
                    mark = 0
                while mark <= head:
                    with self._writing("indexing submission texts") as conn:
                        records = conn.execute(
                            select(archive.c.offset, archive.c.record)
                            .where(archive.c.partition == partition, archive.c.offset >= mark)
                            .order_by(archive.c.offset)
                            .limit(_SYNC_BATCH)
                        ).all()
                        if not records:
                            break
                        rows = submission_text_rows(bytes(r.record) for r in records)
                        self.insert_texts(conn, rows)
                        added += len(rows)
                        mark = int(records[-1].offset) + 1
                        _set_mark(conn, partition, mark)
        return added


def _insert(dialect: str, table: Table) -> Any:
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(table)


def _set_mark(conn: Connection, partition: int, mark: int) -> None:
    stmt = _insert(conn.dialect.name, text_sync).values(partition=partition, next_offset=mark)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[text_sync.c.partition], set_={"next_offset": mark}
        )
    )


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]

"""What an auditor reads: a submission's timeline, the archive and its hash chains, a full dump.

The archive is streamed in (partition, offset) order; on SQLite through the
driver's own cursor. A dump spells every value the same on both backends, so
two stores with equal dumps hold equal state (replay's audit compares them).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from sada.consumers.archive import ArchiveRow, VerifyReport, verify
from sada.consumers.store.base import StoreBase
from sada.consumers.store.engine import describe, driver_cursor
from sada.consumers.store.joins import EVENT_RECORD
from sada.consumers.store.rows import ARCHIVE_RECORD, ARCHIVE_ROW, time_text
from sada.consumers.tables import STATE_TABLES, archive, checkpoints, escalations, events
from sada.pipeline.domain.errors import StoreError
from sada.pipeline.domain.model import format_time
from sada.pipeline.domain.ports import Checkpoint


class Audit(StoreBase):
    """The store's answers to an auditor and to replay's comparison."""

    def timeline(self, submission_id: str) -> list[dict[str, Any]]:
        """Every applied event of a submission in log order, with its archived CloudEvent.

        ``event`` is None when the archive holds no readable record at that offset.
        """
        with self._reading("reading a timeline", states=False) as conn:
            rows = conn.execute(
                select(events, archive.c.record)
                .join_from(events, archive, EVENT_RECORD, isouter=True)
                .where(events.c.submission_id == submission_id)
                .order_by(events.c.partition, events.c.offset)
            ).all()
        return [
            {
                "key": r.key,
                "partition": r.partition,
                "offset": r.offset,
                "type": r.type,
                "time": time_text(r.time),
                "at": time_text(r.at),
                "late": r.late,
                "effective": r.effective,
                "note": r.note,
                "event": _cloud_event(r.record),
            }
            for r in rows
        ]

    def iter_archive(self, partition: int | None = None) -> Iterator[ArchiveRow]:
        """Archived records in (partition, offset) order, streamed."""
        for p, o, record, prev_hash, h in self._stream_archive(ARCHIVE_ROW, partition):
            yield ArchiveRow(p, o, bytes(record), prev_hash, h)

    def iter_records(self, partition: int | None = None) -> Iterator[tuple[int, int, bytes]]:
        """``(partition, offset, record)`` of archived records in that order, streamed."""
        for p, o, record in self._stream_archive(ARCHIVE_RECORD, partition):
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
                # more than SQLite's reading it. In autocommit mode (set on connecting,
                # see .engine) the one SELECT reads one snapshot.
                compiled = stmt.compile(dialect=self.engine.dialect)
                params = [compiled.params[n] for n in compiled.positiontup or ()]
                with driver_cursor(conn) as cursor:
                    cursor.execute(str(compiled), params)
                    while rows := cursor.fetchmany(2000):
                        yield from rows
        except (SQLAlchemyError, self._driver_error) as e:
            raise StoreError(f"{what} failed: {describe(e)}") from e

    def checkpoints(self) -> list[Checkpoint]:
        with self._reading("reading checkpoints", states=False) as conn:
            rows = conn.execute(select(checkpoints).order_by(checkpoints.c.partition)).all()
        return [
            Checkpoint(r.partition, r.next_offset, r.clock, r.head_hash, r.tree_size, r.tree_root)
            for r in rows
        ]

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


def _cloud_event(record: bytes | None) -> dict[str, Any] | None:
    if record is None:
        return None
    try:
        obj = orjson.loads(record)
    except orjson.JSONDecodeError:
        return None
    ce = obj.get("event") if isinstance(obj, dict) else None
    return ce if isinstance(ce, dict) else None

"""The projector's side of the store (:class:`~sada.pipeline.domain.ports.ProjectionStore`).

What the projector loads at start, looks up before folding a batch, writes
in one transaction per batch (archive records, ledger entries, states,
stances, responses, escalations and the partition checkpoint: a crash leaves
all of it or none), and the escalation outbox it publishes from.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import pairwise
from typing import Any, TypeVar

from sqlalchemy import Connection, false, insert, select, true, update

from sada.consumers.archive import chain_hash
from sada.consumers.store.notifications import write_batch as write_notifications
from sada.consumers.store.rows import (
    ESCALATION_FIELDS,
    STATE_FIELDS,
    STATE_SHARED_POSITIONS,
    batch_rows,
    time_text,
)
from sada.consumers.store.trees import Trees
from sada.consumers.tables import archive, checkpoints, escalations, rejections, submissions
from sada.pipeline.domain.errors import FencedError, StoreError
from sada.pipeline.domain.model import Escalated, Stance, SubmissionState, utc
from sada.pipeline.domain.ports import BatchWrite, Checkpoint, Rejection

T = TypeVar("T")

# Bound parameters per statement stay far below SQLite's oldest limit (999).
_CHUNK = 900
# Keys per prefetch lookup: one array (JSON on SQLite) parameter, however many keys.
_LOOKUP_CHUNK = 5000


def _chunks(items: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Projection(Trees):
    """The projector's reads and its one-transaction batch write."""

    def load(self, partition: int) -> tuple[Checkpoint, list[SubmissionState]]:
        """The partition's checkpoint and the states of every submission living in it."""
        with self._reading("loading partition") as conn:
            checkpoint = self._checkpoint(conn, partition)
            rows = conn.execute(
                select(*(submissions.c[f] for f in STATE_FIELDS)).where(
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
            for i in STATE_SHARED_POSITIONS:
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
        return Checkpoint(
            partition,
            row.next_offset,
            row.clock,
            row.head_hash,
            row.pending or "",
            row.tree_size,
            row.tree_root,
        )

    def stances(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Stance]:
        """Current stances of the given (submission id, voter id) pairs that have one."""
        wanted = list(dict.fromkeys(pairs))
        out: dict[tuple[str, str], Stance] = {}
        lookups = self._lookups
        with self._reading("reading stances", states=False) as conn:
            for chunk in _chunks(wanted, _LOOKUP_CHUNK):
                for sid, voter, stance in conn.execute(
                    lookups.stances, lookups.stances_params(chunk)
                ):
                    out[(sid, voter)] = stance
        return out

    def seen(self, keys: Iterable[str]) -> set[str]:
        """Those of ``keys`` already applied or rejected (present in either ledger)."""
        wanted = list(dict.fromkeys(keys))
        out: set[str] = set()
        lookups = self._lookups
        with self._reading("reading the ledger", states=False) as conn:
            for chunk in _chunks(wanted, _LOOKUP_CHUNK):
                out.update(conn.scalars(lookups.seen, lookups.seen_params(chunk)))
            rest = [k for k in wanted if k not in out]
            for chunk in _chunks(rest):
                out.update(
                    conn.scalars(select(rejections.c.key).where(rejections.c.key.in_(chunk)))
                )
        return out

    def taken_tracking_codes(self, codes: Iterable[str]) -> set[str]:
        """Those of ``codes`` some submission already has, in any partition."""
        wanted = list(dict.fromkeys(codes))
        out: set[str] = set()
        with self._reading("reading tracking codes", states=False) as conn:
            for chunk in _chunks(wanted):
                out.update(
                    conn.scalars(
                        select(submissions.c.tracking_code).where(
                            submissions.c.tracking_code.in_(chunk)
                        )
                    )
                )
        return out

    def archived(self, partition: int, offsets: Iterable[int]) -> dict[int, bytes]:
        """The archived records of ``partition`` at ``offsets``."""
        wanted = sorted(set(offsets))
        out: dict[int, bytes] = {}
        with self._reading("reading the archive", states=False) as conn:
            for chunk in _chunks(wanted):
                for offset, record in conn.execute(
                    select(archive.c.offset, archive.c.record).where(
                        archive.c.partition == partition, archive.c.offset.in_(chunk)
                    )
                ):
                    out[offset] = bytes(record)
        return out

    def write(self, batch: BatchWrite) -> Checkpoint:
        """Write one projector batch and its checkpoint atomically.

        Archive records continue the partition's hash chain from the stored
        head hash, and its Merkle tree from the stored tree head (leaves, the
        nodes they complete, the new size and root); the checkpoint's
        ``head_hash`` and tree head become the ones written (those in
        ``batch.checkpoint`` are not used). Archive offsets must rise
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
        rows = batch_rows(batch, states=rebuild is None)
        bulk = self._bulk
        with self._writing(f"writing a batch of partition {p}") as conn:
            current = self._checkpoint(conn, p)
            if offsets and offsets[0] < current.next_offset:
                # Another owner of the partition got here first: this writer is a zombie.
                raise FencedError(
                    f"partition {p}: batch starts at offset {offsets[0]}, "
                    f"but offsets before {current.next_offset} are already written"
                )
            tree = self._grow(
                conn, p, current.tree_size, current.tree_root, [r for _, r in batch.archive]
            )
            head = current.head_hash
            sealed = []
            for (offset, record), leaf in zip(batch.archive, tree.leaves, strict=True):
                h = chain_hash(head, p, offset, record)
                sealed.append((p, offset, record, head, h, leaf))
                head = h
            bulk.archive.run(conn, sealed)
            bulk.merkle_nodes.run(conn, tree.nodes)
            bulk.events.run(conn, rows.events)
            bulk.states.run(conn, rows.states)  # none while rebuilding: held back
            bulk.votes_set.run(conn, rows.votes_set)
            bulk.votes_unset.run(conn, rows.votes_unset)
            bulk.responses.run(conn, rows.responses)
            bulk.escalations.run(conn, rows.escalations)
            if batch.rejections:
                conn.execute(insert(rejections), [_rejection_row(p, r) for r in batch.rejections])
            # A rebuild's notifications were told when the history was live: never again.
            write_notifications(conn, batch, told=rebuild is not None)
            clock = batch.checkpoint.clock
            pending = batch.checkpoint.pending
            bulk.checkpoint.run(
                conn,
                [
                    (
                        p,
                        batch.checkpoint.next_offset,
                        time_text(clock),
                        head,
                        pending,
                        tree.size,
                        tree.root_hex,
                    )
                ],
            )
        if rebuild is not None:
            rebuild.hold(batch)
        return Checkpoint(
            p,
            batch.checkpoint.next_offset,
            None if clock is None else utc(clock),
            head,
            pending,
            tree.size,
            tree.root_hex,
        )

    def unpublished_escalations(
        self, limit: int = 1000, partitions: Iterable[int] | None = None
    ) -> list[Escalated]:
        """Escalations not yet published, oldest first (per submission, in level order).

        With ``partitions``, only those of submissions living in them: each worker
        publishes the outbox of the partitions it owns.
        """
        query = select(*(escalations.c[f] for f in ESCALATION_FIELDS)).where(
            escalations.c.published == false()
        )
        if partitions is not None:
            query = query.where(
                escalations.c.submission_id.in_(
                    select(submissions.c.submission_id).where(
                        submissions.c.partition.in_(sorted(partitions))
                    )
                )
            )
        with self._reading("reading the escalation outbox", states=False) as conn:
            rows = conn.execute(
                query.order_by(
                    escalations.c.time,
                    escalations.c.submission_id,
                    escalations.c.to_level,
                    escalations.c.event_id,
                ).limit(limit)
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

    def unpublished_rejections(
        self, limit: int = 1000, partitions: Iterable[int] | None = None
    ) -> list[Rejection]:
        """Rejected inputs not yet on ``sada.dlq``, in log order (of ``partitions``, if given)."""
        query = select(rejections).where(rejections.c.published == false())
        if partitions is not None:
            query = query.where(rejections.c.partition.in_(sorted(partitions)))
        with self._reading("reading the rejection outbox", states=False) as conn:
            rows = conn.execute(
                query.order_by(rejections.c.partition, rejections.c.offset, rejections.c.key).limit(
                    limit
                )
            ).all()
        return [
            Rejection(
                r.key,
                r.offset,
                (r.src_topic, r.src_partition, r.src_offset),
                r.type,
                r.reason,
                r.detail,
                None if r.value is None else bytes(r.value),
                r.at,
            )
            for r in rows
        ]

    def mark_rejections_published(self, keys: Iterable[str]) -> None:
        todo = list(dict.fromkeys(keys))
        if not todo:
            return
        with self._writing("marking rejections published") as conn:
            for chunk in _chunks(todo):
                conn.execute(
                    update(rejections).where(rejections.c.key.in_(chunk)).values(published=true())
                )


def _rejection_row(partition: int, r: Rejection) -> dict[str, Any]:
    return {
        "key": r.key,
        "partition": partition,
        "offset": r.offset,
        "src_topic": r.src[0],
        "src_partition": r.src[1],
        "src_offset": r.src[2],
        "type": r.type,
        "reason": r.reason,
        "detail": r.detail,
        "value": r.value,
        "at": r.at,
        "published": False,
    }

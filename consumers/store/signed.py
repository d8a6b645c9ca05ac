"""Signed checkpoints, the deployment's verifier keys and authors' receipts, in the store.

The store keeps only public things: signed notes (``signed_checkpoints``,
with an outbox flag for ``sada.checkpoints``) and verifier keys
(``signing_keys``: the current one, and the retired ones that still verify
older checkpoints). The signing key itself never reaches the database.

A worker registers its key before it starts (:meth:`SignedHeads.register_signing_key`):
the first one makes its key the deployment's; any later worker with another
key, or another deployment name, is refused in one line.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from sada.consumers.store.trees import Trees, fetch_nodes
from sada.consumers.tables import archive, events, signed_checkpoints, signing_keys, submissions
from sada.pipeline.domain.errors import NotFoundError, SigningKeyError
from sada.pipeline.domain.merkle import inclusion_plan, prove
from sada.pipeline.domain.notary import SignedCheckpoint
from sada.pipeline.domain.note import Verifier
from sada.pipeline.domain.receipt import build_receipt

_KEY_LOCK = 0x5ADA0002  # PostgreSQL advisory lock key: one key registration at a time
_FIELDS = ("seq", "partition", "tree_size", "root", "key", "note", "signed_at")


def _signed(row: Row[Any]) -> SignedCheckpoint:
    seq, partition, size, root, key, note, signed_at = tuple(row)
    return SignedCheckpoint(partition, size, bytes.fromhex(root), key, note, signed_at, seq)


def _label(v: Verifier) -> str:
    return f"{v.name}+{v.key_id:08x}"


class SignedHeads(Trees):
    """Keys, signed checkpoints (the notary's store) and receipts."""

    # -- keys -------------------------------------------------------------------------------

    def signing_keys(self) -> list[dict[str, Any]]:
        """Every verifier key of the deployment: the current one first, then the retired."""
        with self._reading("reading signing keys", states=False) as conn:
            rows = list(conn.execute(select(signing_keys)).all())
        # The current key, then the retired ones, most recently retired first.
        rows.sort(
            key=lambda r: (r.retired_at is not None, -(r.retired_at or r.added_at).timestamp())
        )
        return [
            {
                "key": r.key,
                "verifier_key": r.verifier_key,
                "name": r.key.rsplit("+", 1)[0],
                "key_id": r.key.rsplit("+", 1)[1],
                "deployment": r.deployment,
                "added_at": r.added_at.isoformat().replace("+00:00", "Z"),
                "retired_at": None
                if r.retired_at is None
                else r.retired_at.isoformat().replace("+00:00", "Z"),
            }
            for r in rows
        ]

    def current_key(self) -> str | None:
        keys = self.signing_keys()
        return keys[0]["key"] if keys and keys[0]["retired_at"] is None else None

    def deployment(self) -> str | None:
        """The deployment name its first worker registered, if any."""
        keys = self.signing_keys()
        return keys[0]["deployment"] if keys else None

    def _lock_keys(self, conn: Connection) -> list[Row[Any]]:
        if self.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _KEY_LOCK})
        return list(conn.execute(select(signing_keys)).all())

    def register_signing_key(self, verifier: Verifier, deployment: str) -> None:
        """Make ``verifier`` the deployment's key if it has none; refuse any other key."""
        label = _label(verifier)
        with self._writing("registering the signing key") as conn:
            rows = self._lock_keys(conn)
            current = next((r for r in rows if r.retired_at is None), None)
            if current is None and not rows:
                conn.execute(
                    signing_keys.insert().values(
                        key=label,
                        verifier_key=verifier.text(),
                        deployment=deployment,
                        added_at=datetime.now(UTC),
                        retired_at=None,
                    )
                )
                return
            if current is not None and current.key == label:
                if current.deployment != deployment:
                    raise SigningKeyError(
                        f"this worker's deployment is {deployment!r}, the database's is "
                        f"{current.deployment!r} (SADA_DEPLOYMENT): refusing to start"
                    )
                return
            if any(r.key == label for r in rows):
                raise SigningKeyError(
                    f"signing key {label} was retired"
                    + (f"; the deployment signs with {current.key}" if current else "")
                    + ": refusing to start"
                )
            theirs = current.key if current is not None else "none current"
            raise SigningKeyError(
                f"signing key {label} is not the deployment's ({theirs}): refusing to start; "
                "use the deployment's key (SADA_SIGNING_KEY_FILE) or rotate to this one "
                "(sada audit key --rotate FILE)"
            )

    def rotate_signing_key(self, verifier: Verifier, deployment: str) -> str | None:
        """Make ``verifier`` the current key, retiring the current one; the old key's label."""
        label = _label(verifier)
        now = datetime.now(UTC)
        with self._writing("rotating the signing key") as conn:
            rows = self._lock_keys(conn)
            current = next((r for r in rows if r.retired_at is None), None)
            if current is not None and current.key == label:
                raise SigningKeyError(f"{label} is the current signing key already")
            if any(r.key.rsplit("+", 1)[0] == verifier.name for r in rows):
                raise SigningKeyError(
                    f"a key named {verifier.name} was used before: a new key needs a new name"
                )
            if current is not None and current.deployment != deployment:
                raise SigningKeyError(
                    f"the database's deployment is {current.deployment!r}, not {deployment!r}"
                )
            if current is not None:
                conn.execute(
                    update(signing_keys)
                    .where(signing_keys.c.key == current.key)
                    .values(retired_at=now)
                )
            conn.execute(
                signing_keys.insert().values(
                    key=label,
                    verifier_key=verifier.text(),
                    deployment=deployment,
                    added_at=now,
                    retired_at=None,
                )
            )
        return None if current is None else str(current.key)

    # -- the notary's store -------------------------------------------------------------------

    def latest_signed_sizes(self, key: str) -> dict[int, int]:
        s = signed_checkpoints.c
        with self._reading("reading signed checkpoints", states=False) as conn:
            rows = conn.execute(
                select(s.partition, func.max(s.tree_size)).where(s.key == key).group_by(s.partition)
            ).all()
        return {int(p): int(size) for p, size in rows}

    def add_signed_checkpoints(self, signed: Iterable[SignedCheckpoint]) -> None:
        values = [
            {
                "partition": c.partition,
                "tree_size": c.size,
                "root": c.root.hex(),
                "key": c.key,
                "note": c.note,
                "signed_at": c.signed_at,
                "published": False,
            }
            for c in signed
        ]
        if not values:
            return
        dialect_insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        statement = dialect_insert(signed_checkpoints).on_conflict_do_nothing(
            index_elements=["partition", "key", "tree_size"]
        )
        with self._writing("storing signed checkpoints") as conn:
            conn.execute(statement, values)

    def unpublished_checkpoints(self, limit: int = 1000) -> list[SignedCheckpoint]:
        s = signed_checkpoints.c
        with self._reading("reading the checkpoint outbox", states=False) as conn:
            rows = conn.execute(
                select(*(s[f] for f in _FIELDS))
                .where(s.published.is_(False))
                .order_by(s.seq)
                .limit(limit)
            ).all()
        return [_signed(r) for r in rows]

    def mark_checkpoints_published(self, seqs: Iterable[int]) -> None:
        wanted = sorted(set(seqs))
        if not wanted:
            return
        with self._writing("marking checkpoints published") as conn:
            for i in range(0, len(wanted), 900):
                conn.execute(
                    update(signed_checkpoints)
                    .where(signed_checkpoints.c.seq.in_(wanted[i : i + 900]))
                    .values(published=True)
                )

    # -- reading checkpoints --------------------------------------------------------------------

    def signed_checkpoints(
        self, after_seq: int | None, after_time: datetime | None, limit: int | None
    ) -> list[SignedCheckpoint]:
        """Signed checkpoints in the order they were stored, after a sequence number or instant."""
        s = signed_checkpoints.c
        stmt = select(*(s[f] for f in _FIELDS)).order_by(s.seq)
        if after_seq is not None:
            stmt = stmt.where(s.seq > after_seq)
        if after_time is not None:
            stmt = stmt.where(s.signed_at > after_time)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._reading("reading signed checkpoints", states=False) as conn:
            return [_signed(r) for r in conn.execute(stmt).all()]

    def latest_checkpoints(self) -> list[SignedCheckpoint]:
        """The largest signed checkpoint of each partition, by the current key."""
        key = self.current_key()
        if key is None:
            return []
        s = signed_checkpoints.c
        top = (
            select(s.partition, func.max(s.tree_size).label("size"))
            .where(s.key == key)
            .group_by(s.partition)
            .subquery()
        )
        stmt = (
            select(*(s[f] for f in _FIELDS))
            .join(top, (top.c.partition == s.partition) & (top.c.size == s.tree_size))
            .where(s.key == key)
            .order_by(s.partition)
        )
        with self._reading("reading the latest checkpoints", states=False) as conn:
            return [_signed(r) for r in conn.execute(stmt).all()]

    def checkpoint_of_size(self, partition: int, size: int) -> SignedCheckpoint | None:
        """A signed checkpoint of that tree size, the current key's if there is one."""
        s = signed_checkpoints.c
        current = self.current_key()
        with self._reading("reading signed checkpoints", states=False) as conn:
            rows = conn.execute(
                select(*(s[f] for f in _FIELDS)).where(
                    s.partition == partition, s.tree_size == size
                )
            ).all()
        found = sorted((_signed(r) for r in rows), key=lambda c: (c.key != current, c.seq or 0))
        return found[0] if found else None

    # -- receipts -------------------------------------------------------------------------------

    def receipt(self, code: str) -> dict[str, Any] | None:
        """The receipt of the submission with tracking code ``code`` (ASCII digits).

        None when no checkpoint of the current key covers its creation record
        yet; :class:`NotFoundError` when there is no such submission.
        """
        key = self.current_key()
        sub, e, a, s = submissions.c, events.c, archive.c, signed_checkpoints.c
        with self._reading("making a receipt", states=False) as conn:
            found = conn.execute(
                select(sub.submission_id, sub.partition).where(sub.tracking_code == code)
            ).first()
            if found is None:
                raise NotFoundError(f"no submission has tracking code {code}")
            sid, partition = found
            created = conn.execute(
                select(a.offset, a.record, a.leaf)
                .join(events, (e.partition == a.partition) & (e.offset == a.offset))
                .where(e.submission_id == sid, e.type == "sada.submission.created")
                .order_by(a.offset)
                .limit(1)
            ).first()
            if created is None:
                raise NotFoundError(f"the archive holds no creation record of {code}")
            offset, record, leaf = created
            if key is None:
                return None
            row = conn.execute(
                select(*(s[f] for f in _FIELDS))
                .where(s.partition == partition, s.key == key, s.tree_size > leaf)
                .order_by(s.tree_size.desc())
                .limit(1)
            ).first()
            if row is None:
                return None
            signed = _signed(row)
            plan = inclusion_plan(leaf, signed.size)
            proof = prove(plan, lambda wanted: fetch_nodes(conn, partition, wanted))
        return build_receipt(
            tracking_code=code,
            submission_id=sid,
            partition=partition,
            offset=offset,
            leaf_index=leaf,
            record=bytes(record),
            tree_size=signed.size,
            proof=proof,
            checkpoint=signed.note,
            key=signed.key,
        )

"""The SQL schema: read model, archive, its Merkle trees and checkpoints (SQLAlchemy Core).

Core tables rather than ORM classes: the projector writes thousands of rows
per batch with ``executemany`` and reads them back as plain tuples.

Instants are stored as TEXT in the one spelling of :func:`~sada.pipeline.domain.model.format_time`
(``2026-01-03T08:00:00.000000Z``): exact to the microsecond on every backend,
byte-identical between SQLite and PostgreSQL, and, being fixed-width, ordered
chronologically by plain string comparison.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator

from sada.pipeline.domain.merkle import EMPTY_ROOT
from sada.pipeline.domain.model import format_time, parse_time

INSTANT_LENGTH = len("2026-01-03T08:00:00.000000Z")
HASH_LENGTH = 64
EMPTY_ROOT_HEX = EMPTY_ROOT.hex()


def instant_text(dt: datetime) -> str:
    """The stored spelling of an instant: :func:`~sada.pipeline.domain.model.format_time`'s."""
    return format_time(dt)


class Instant(TypeDecorator[datetime]):
    """A timezone-aware instant, stored as fixed-width ISO-8601 UTC text.

    Binding also accepts text already in the stored spelling (the bulk writer
    converts values itself).
    """

    impl = String(INSTANT_LENGTH)
    cache_ok = True

    def process_bind_param(self, value: datetime | str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if isinstance(value, str):
            if len(value) != INSTANT_LENGTH or not value.endswith("Z"):
                raise ValueError(f"not an instant in stored form: {value!r}")
            return value
        return instant_text(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else parse_time(value)


metadata = MetaData()

submissions = Table(
    "submissions",
    metadata,
    Column("submission_id", Text, primary_key=True),
    Column("tracking_code", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("channel", Text, nullable=False),
    Column("created_at", Instant, nullable=False),
    Column("status", Text, nullable=False),
    Column("unit_id", Text, nullable=False),
    Column("level", Integer, nullable=False),
    Column("support", Integer, nullable=False),
    Column("oppose", Integer, nullable=False),
    Column("arrived_at", Instant, nullable=False),
    Column("first_response_due", Instant),
    Column("resolution_due", Instant),
    Column("first_response_overdue", Boolean, nullable=False),
    Column("resolution_overdue", Boolean, nullable=False),
    Column("first_response_at", Instant),
    Column("closed_at", Instant),
    Column("satisfaction", Integer),
    Column("escalations", Integer, nullable=False),
    Column("updated_at", Instant, nullable=False),
    Column("partition", Integer, nullable=False),  # of the canonical log it lives in
    Index("ix_submissions_tracking_code", "tracking_code", unique=True),
    Index("ix_submissions_status_unit", "status", "unit_id"),
    Index("ix_submissions_partition", "partition"),
)

votes = Table(
    "votes",
    metadata,
    Column("submission_id", Text, nullable=False),
    Column("voter_id", Text, nullable=False),
    Column("stance", Text, nullable=False),
    Column("at", Instant, nullable=False),
    PrimaryKeyConstraint("submission_id", "voter_id", name="pk_votes"),
)

# Keyed by the event key: a response id is the integrator's, so it is not trusted to be unique.
responses = Table(
    "responses",
    metadata,
    Column("key", Text, primary_key=True),
    Column("response_id", Text, nullable=False),
    Column("submission_id", Text, nullable=False),
    Column("unit_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("referred_to_unit_id", Text),
    Column("at", Instant, nullable=False),
    Column("effective", Boolean, nullable=False),
    Index("ix_responses_submission", "submission_id", "at"),
)

escalations = Table(
    "escalations",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("submission_id", Text, nullable=False),
    Column("time", Instant, nullable=False),
    Column("from_level", Integer, nullable=False),
    Column("to_level", Integer, nullable=False),
    Column("from_unit_id", Text, nullable=False),
    Column("to_unit_id", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("support", Integer, nullable=False),
    Column("deadline", Instant),
    Column("published", Boolean, nullable=False),
    Index("ix_escalations_submission", "submission_id", "to_level"),
    Index("ix_escalations_outbox", "published", "time", "submission_id", "to_level"),
)

# The ledger of applied event keys and the index of every submission's timeline.
events = Table(
    "events",
    metadata,
    Column("key", Text, primary_key=True),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("submission_id", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("time", Instant, nullable=False),
    Column("at", Instant, nullable=False),
    Column("late", Boolean, nullable=False),
    Column("effective", Boolean, nullable=False),
    Column("note", Text, nullable=False),
    Index("ix_events_submission_offset", "submission_id", "offset"),
)

archive = Table(
    "archive",
    metadata,
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("record", LargeBinary, nullable=False),
    Column("prev_hash", String(HASH_LENGTH), nullable=False),
    Column("hash", String(HASH_LENGTH), nullable=False),
    # The record's leaf in its partition's Merkle tree (leaves never skip, offsets may).
    Column("leaf", BigInteger, nullable=False, server_default="0"),
    PrimaryKeyConstraint("partition", "offset", name="pk_archive"),
)

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("partition", Integer, primary_key=True, autoincrement=False),
    Column("next_offset", BigInteger, nullable=False),
    Column("clock", Instant),
    Column("head_hash", String(HASH_LENGTH), nullable=False),
    # What the partition's sequencer holds (JSON): watermarks, offsets of held events.
    Column("pending", Text, nullable=False, server_default=""),
    # The partition's Merkle tree after the last archived record: its size and root (hex).
    Column("tree_size", BigInteger, nullable=False, server_default="0"),
    Column("tree_root", String(HASH_LENGTH), nullable=False, server_default=EMPTY_ROOT_HEX),
)

# Inputs that will not take effect: the ledger of rejections and the outbox of sada.dlq.
rejections = Table(
    "rejections",
    metadata,
    Column("key", Text, primary_key=True),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("src_topic", Text, nullable=False),
    Column("src_partition", Integer, nullable=False),
    Column("src_offset", BigInteger, nullable=False),
    Column("type", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("value", LargeBinary),
    Column("at", Instant),
    Column("published", Boolean, nullable=False),
    Index("ix_rejections_outbox", "published", "partition", "offset"),
)

# Who follows a submission: its author (through the source that created it) and its
# supporters; the audience of its notifications.
followers = Table(
    "followers",
    metadata,
    Column("submission_id", Text, nullable=False),
    Column("recipient", Text, nullable=False),
    Column("source", Text),
    PrimaryKeyConstraint("submission_id", "recipient"),
)

# Who was told what: one row per (decision, recipient), and the outbox of
# sada.notifications; (partition, offset, seq) is decision order.
notifications = Table(
    "notifications",
    metadata,
    Column("id", Text, primary_key=True),
    Column("partition", Integer, nullable=False),
    Column("offset", BigInteger, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("recipient", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("submission_id", Text, nullable=False),
    Column("decision_id", Text, nullable=False),
    Column("at", Instant, nullable=False),
    Column("source", Text),
    Column("payload", Text, nullable=False),  # JSON: the notification's data
    Column("published", Boolean, nullable=False),
    Index("ix_notifications_outbox", "published", "partition", "offset", "seq"),
)

# Webhook deliveries: one row per (notification, endpoint), kept once delivered or given up.
deliveries = Table(
    "deliveries",
    metadata,
    Column("notification_id", Text, nullable=False),
    Column("endpoint", Text, nullable=False),
    Column("state", Text, nullable=False),  # pending, delivered, failed
    Column("attempts", Integer, nullable=False),
    Column("created_at", Instant, nullable=False),
    Column("next_attempt_at", Instant, nullable=False),
    Column("last_status", Integer),
    Column("last_error", Text, nullable=False),
    Column("delivered_at", Instant),
    PrimaryKeyConstraint("notification_id", "endpoint"),
    Index("ix_deliveries_due", "state", "endpoint", "next_attempt_at"),
)

# Webhook endpoints an operator or a 410 disabled (the config says which exist).
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", Text, primary_key=True),
    Column("disabled_at", Instant),
    Column("reason", Text, nullable=False),
)

# Every complete subtree of every partition's Merkle tree (RFC 9162 hashes, 32 bytes),
# keyed by ``seq``, the position of node (level, index) in the order nodes complete
# (:func:`~sada.pipeline.domain.merkle.stored_index`): each batch appends at the end
# of its partition's key range instead of touching one index page per tree level.
# Proofs read O(log n) of these; the projector adds them in its records' transaction.
merkle_nodes = Table(
    "merkle_nodes",
    metadata,
    Column("partition", Integer, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", LargeBinary, nullable=False),
    PrimaryKeyConstraint("partition", "seq", name="pk_merkle_nodes"),
    sqlite_with_rowid=False,  # small rows: the key is the table, one b-tree, not two
)

# Signed checkpoints (C2SP signed notes); ``published``: sent to sada.checkpoints.
signed_checkpoints = Table(
    "signed_checkpoints",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("partition", Integer, nullable=False),
    Column("tree_size", BigInteger, nullable=False),
    Column("root", String(HASH_LENGTH), nullable=False),
    Column("key", Text, nullable=False),
    Column("note", Text, nullable=False),
    Column("signed_at", Instant, nullable=False),
    Column("published", Boolean, nullable=False),
    Index("ix_signed_checkpoints_head", "partition", "key", "tree_size", unique=True),
    Index("ix_signed_checkpoints_outbox", "published", "seq"),
)

# The deployment's verifier keys (public; the signing key is never stored). The
# current key is the one not retired; the others verify older checkpoints.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("key", Text, primary_key=True),  # "<name>+<key ID>"
    Column("verifier_key", Text, nullable=False),
    Column("deployment", Text, nullable=False),
    Column("added_at", Instant, nullable=False),
    Column("retired_at", Instant),
)

# Tables whose rows are state (and so compared across backends); order is for reading only.
# Signed checkpoints and keys are not: they record when and by whom, which replay cannot redo.
STATE_TABLES = (
    submissions,
    votes,
    responses,
    escalations,
    events,
    rejections,
    archive,
    checkpoints,
    merkle_nodes,
)

# Fingerprints of the deployment's keys (never the keys): workers with another key refuse to start.
deployment_keys = Table(
    "deployment_keys",
    metadata,
    Column("name", Text, primary_key=True),
    Column("fingerprint", String(HASH_LENGTH), nullable=False),
    Column("created_at", Instant, nullable=False),
)

"""Sada's Kafka topics as data, their idempotent creation, and the canonical-log partitioner.

Input topics are written by integrators' clients, whose partitioners differ
(librdkafka hashes keys with CRC32, Java and kafka-python with murmur2), so the
same submission id may sit on different partition numbers of different input
topics. Sada therefore never assumes the input topics are co-partitioned: it
writes every accepted event to ``sada.log``, keyed by submission id and placed
by :func:`partition_for`, which Sada computes itself.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Literal

from kafka.errors import KafkaError, for_code
from kafka.partitioner.default import murmur2 as murmur2  # re-exported: the Java client's hash

from sada.infra.broker import _one_line, admin_client
from sada.pipeline.domain.errors import BrokerError

SUBMISSIONS = "sada.submissions"
VOTES = "sada.votes"
RESPONSES = "sada.responses"
ESCALATIONS = "sada.escalations"
DLQ = "sada.dlq"
NOTIFICATIONS = "sada.notifications"
LOG = "sada.log"
CHECKPOINTS = "sada.checkpoints"

INPUT_TOPICS: tuple[str, ...] = (SUBMISSIONS, VOTES, RESPONSES)

_DAY_MS = 24 * 60 * 60 * 1000
_TOPIC_ALREADY_EXISTS = 36


class TopicRole(StrEnum):
    INPUT = "input"  # written by integrators
    OUTPUT = "output"  # written by Sada for others to read
    INTERNAL = "internal"  # written and read by Sada only


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name, role, partition count and topic-level configs.

    ``partitions=None`` means "the deployment's partition count" (``SADA_PARTITIONS``).
    """

    name: str
    role: TopicRole
    carries: str
    partitions: int | None = None
    configs: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def partition_count(self, default: int) -> int:
        return default if self.partitions is None else self.partitions


def _configs(retention_ms: int) -> Mapping[str, str]:
    return MappingProxyType({"cleanup.policy": "delete", "retention.ms": str(retention_ms)})


TOPICS: tuple[TopicSpec, ...] = (
    # Inputs only feed sada.log; a week covers any outage of the pipeline.
    TopicSpec(
        SUBMISSIONS,
        TopicRole.INPUT,
        "sada.submission.created, sada.submission.withdrawn",
        configs=_configs(7 * _DAY_MS),
    ),
    TopicSpec(
        VOTES,
        TopicRole.INPUT,
        "sada.vote.cast, sada.vote.retracted, sada.submission.followed, sada.submission.unfollowed",
        configs=_configs(7 * _DAY_MS),
    ),
    TopicSpec(
        RESPONSES,
        TopicRole.INPUT,
        "sada.response.posted, sada.satisfaction.rated",
        configs=_configs(7 * _DAY_MS),
    ),
    # Escalations are a public record: kept forever.
    TopicSpec(
        ESCALATIONS,
        TopicRole.OUTPUT,
        "sada.submission.escalated",
        configs=_configs(-1),
    ),
    # Rejections are rare and are the evidence that nothing was dropped: one
    # partition keeps them in arrival order, and they are kept forever.
    TopicSpec(
        DLQ,
        TopicRole.OUTPUT,
        "every rejected input, unchanged, with the reason",
        partitions=1,
        configs=_configs(-1),
    ),
    # Who was told what, keyed by recipient for bots to relay; a month covers any
    # consumer's outage (the store keeps every notification).
    TopicSpec(
        NOTIFICATIONS,
        TopicRole.OUTPUT,
        "sada.notification.*",
        configs=_configs(30 * _DAY_MS),
    ),
    # The canonical log is what state is rebuilt from: never expired.
    TopicSpec(
        LOG,
        TopicRole.INTERNAL,
        "every accepted event, keyed and partitioned by submission id",
        configs=_configs(-1),
    ),
    # Signed checkpoints of the archive, keyed by origin (one log partition's
    # tree): a copy outside the database for anyone to keep. Kept forever.
    TopicSpec(
        CHECKPOINTS,
        TopicRole.OUTPUT,
        "signed checkpoints of the archive (C2SP tlog-checkpoint)",
        configs=_configs(-1),
    ),
)

TOPICS_BY_NAME: Mapping[str, TopicSpec] = MappingProxyType({t.name: t for t in TOPICS})

TopicState = Literal["created", "exists", "fewer-partitions"]


@dataclass(frozen=True)
class TopicStatus:
    """The outcome of :func:`ensure_topics` for one topic.

    ``status`` is ``"created"``, ``"exists"`` (with at least ``wanted``
    partitions) or ``"fewer-partitions"`` (exists with fewer than ``wanted``;
    reported, not changed, because adding partitions moves keys).
    """

    name: str
    partitions: int
    wanted: int
    status: TopicState


def ensure_topics(bootstrap: str, partitions: int, *, timeout: float = 30.0) -> list[TopicStatus]:
    """Create the missing Sada topics at ``bootstrap``; report every topic, in :data:`TOPICS` order.

    Idempotent: an existing topic is never recreated or altered, and one
    created concurrently by another process counts as existing. Replication
    is the broker's default (``default.replication.factor``).
    """
    if partitions < 1:
        raise BrokerError(f"partition count must be at least 1, got {partitions}")
    wanted = {t.name: t.partition_count(partitions) for t in TOPICS}
    try:
        with admin_client(bootstrap, timeout) as admin:
            existing = set(admin.list_topics())
            missing = [t for t in TOPICS if t.name not in existing]
            created = _create(admin, missing, wanted, timeout) if missing else set()
            if created:
                admin.wait_for_topics(sorted(created), timeout_ms=int(timeout * 1000))
            counts = _partition_counts(admin, [t.name for t in TOPICS])
    except KafkaError as e:
        raise BrokerError(f"cannot create topics at {bootstrap}: {_one_line(e)}") from e
    result = []
    for t in TOPICS:
        have, want = counts[t.name], wanted[t.name]
        state: TopicState
        if t.name in created:
            state = "created"
        elif have < want:
            state = "fewer-partitions"
        else:
            state = "exists"
        result.append(TopicStatus(t.name, have, want, state))
    return result


def _create(
    admin: Any, specs: list[TopicSpec], wanted: Mapping[str, int], timeout: float
) -> set[str]:
    request = {
        t.name: {
            "num_partitions": wanted[t.name],
            "replication_factor": -1,
            "configs": dict(t.configs),
        }
        for t in specs
    }
    response = admin.create_topics(request, timeout_ms=int(timeout * 1000), raise_errors=False)
    created = set()
    for topic in response["topics"]:
        code = topic["error_code"]
        if code == 0:
            created.add(topic["name"])
        elif code != _TOPIC_ALREADY_EXISTS:
            reason = topic.get("error_message") or for_code(code).__name__
            raise BrokerError(f"cannot create topic {topic['name']}: {reason}")
    return created


def _partition_counts(admin: Any, names: list[str]) -> dict[str, int]:
    counts = {}
    for topic in admin.describe_topics(names):
        if topic["error_code"] != 0:
            reason = for_code(topic["error_code"]).__name__
            raise BrokerError(f"cannot describe topic {topic['name']}: {reason}")
        counts[topic["name"]] = len(topic["partitions"])
    absent = [n for n in names if n not in counts]
    if absent:
        raise BrokerError(f"topics missing from broker metadata: {', '.join(absent)}")
    return counts


@functools.lru_cache(maxsize=1 << 16)
def partition_for(key: str, partitions: int) -> int:
    """The partition of ``sada.log`` (of ``partitions``) that holds submission ``key``.

    The same rule as the Java client's and kafka-python's default partitioner
    for keyed records: ``(murmur2(utf8(key)) & 0x7fffffff) % partitions``, so
    any Kafka tool reading the log agrees with Sada on where a key lives.
    The hash is kafka-python's :func:`murmur2` (unsigned 32 bits, Java's bit
    pattern). Cached: every event of a submission asks for the same key, and
    murmur2 is pure Python.
    """
    if partitions < 1:
        raise ValueError(f"partition count must be at least 1, got {partitions}")
    return int(murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions

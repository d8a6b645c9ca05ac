"""The canonical log's records as written, before the projector orders them.

Ingress members forward what they read without ordering it: each accepted
event with the input position it came from (:class:`ForwardedEvent`), each
rejected input (:class:`InputRejected`), and after every batch a watermark
(:class:`InputMark`) telling how far each of their input partitions has got.
The projector of a log partition orders these into the fold's records
(:class:`~sada.pipeline.domain.fold.EventRecord` and
:class:`~sada.pipeline.domain.fold.TickRecord`) in content order, so the result
does not depend on how many members wrote the log or how it interleaved.
:class:`OrderedRecord` carries a record that is in event-time order already.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sada.pipeline.domain.fold import EventRecord, TickRecord

InputPosition = tuple[str, int, int]  # topic, partition, offset


@dataclass(frozen=True, slots=True)
class ForwardedEvent:
    event: dict[str, Any]  # the CloudEvent as received (validated)
    topic: str
    src: InputPosition
    key: str  # "<source> <id>"


@dataclass(frozen=True, slots=True)
class PartitionMark:
    topic: str
    partition: int
    time: datetime | None  # the greatest event time read from it; None: none yet
    idle: bool  # caught up and quiet: it does not hold the clock back


@dataclass(frozen=True, slots=True)
class InputMark:
    inputs: tuple[PartitionMark, ...]
    total: int  # input partitions in all, over every writer
    wall: datetime  # the writer's wall clock when it wrote the mark
    mode: str = "wall"  # how the clock moves when every input is idle: "wall" or "event"
    grace: float = 10.0  # seconds of event time an event waits for its submission


@dataclass(frozen=True, slots=True)
class InputRejected:
    src: InputPosition
    key: str  # "<source> <id>" when the input names both, else "@<topic>/<partition>/<offset>"
    reason: str
    detail: str
    type: str
    value: bytes | None  # the input, unchanged


@dataclass(frozen=True, slots=True)
class OrderedRecord:
    record: EventRecord | TickRecord
    event: dict[str, Any] | None  # the CloudEvent of an event record


RawRecord = ForwardedEvent | InputMark | InputRejected | OrderedRecord

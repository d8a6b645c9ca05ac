"""Event time for one canonical-log partition: watermarks in, events released in content order.

Ingress members forward events unordered and, after each batch, write a
watermark (:class:`~sada.pipeline.domain.records.InputMark`) into every log
partition: for each input partition they read, the greatest event time seen and
whether it is idle. The :class:`Sequencer` keeps the latest report per input
partition (a report never moves one back), and once every input partition has
reported, the pipeline clock is the least time the active ones have reached —
the rule of ``domain.md`` ("Arrival order"), whoever reads each partition:

- some input partition is active: the least time the active ones reached
  (capped by the writers' wall clock in ``wall`` mode: a producer's clock
  running ahead must not push decisions into the future);
- every input partition is idle: the wall clock (``wall`` mode) or the greatest
  event time seen (``event`` mode, for bulk loads and tests).

The clock never moves back. Events wait in a buffer and are released, once the
clock has passed them, in order of (time, event key): content, never arrival
order or offsets, so one worker or three give the same sequence. An event older
than the clock on arrival is late: it is released at once, at the clock.

Everything here is a function of the records offered, so a replay of the log
reproduces it; :meth:`Sequencer.pending` is what must outlive a restart.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sada.pipeline.domain.model import format_time, parse_time
from sada.pipeline.domain.records import ForwardedEvent, InputMark

InputPartition = tuple[str, int]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Held:
    """A forwarded event waiting for the clock (or for its submission)."""

    time: datetime
    key: str
    offset: int  # where it is in the log partition (and so in the archive)
    event: ForwardedEvent


class Sequencer:
    def __init__(self, mode: str = "wall", clock: datetime | None = None) -> None:
        self.mode = mode
        self.clock = clock
        self.total = 0
        self.wall: datetime | None = None
        # Per input partition: (greatest time reached, idle, wall clock of the report).
        self.marks: dict[InputPartition, tuple[datetime | None, bool, datetime]] = {}
        self._buffer: list[tuple[datetime, str, int, Held]] = []

    # -- input --------------------------------------------------------------------

    def offer(self, held: Held) -> bool:
        """Take a forwarded event; True if it is late (the caller releases it at once)."""
        if self.clock is not None and held.time < self.clock:
            return True
        heapq.heappush(self._buffer, (held.time, held.key, held.offset, held))
        return False

    def mark(self, mark: InputMark) -> list[Held]:
        """Take a watermark; the events it releases, in (time, key) order."""
        for m in mark.inputs:
            tp = (m.topic, m.partition)
            old = self.marks.get(tp)
            time = m.time
            if old is not None and old[0] is not None and (time is None or time < old[0]):
                time = old[0]  # a new owner starting over never moves a partition back
            self.marks[tp] = (time, m.idle, mark.wall)
        self.total = mark.total
        self.mode = mark.mode
        if self.wall is None or mark.wall > self.wall:
            self.wall = mark.wall
        return self.advance(self._candidate())

    def advance(self, to: datetime | None) -> list[Held]:
        """Move the clock to ``to`` (never back); release what it has passed."""
        if to is not None and (self.clock is None or to > self.clock):
            self.clock = to
        out: list[Held] = []
        clock = self.clock
        if clock is None:
            return out
        buffer = self._buffer
        # When every input is idle nothing more is coming: events at the clock go too.
        ties = self.all_idle
        while buffer and (buffer[0][0] < clock or (ties and buffer[0][0] <= clock)):
            out.append(heapq.heappop(buffer)[3])
        return out

    # -- the clock ------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """Every input partition has reported at least once."""
        return self.total > 0 and len(self.marks) >= self.total

    @property
    def all_idle(self) -> bool:
        return self.complete and all(idle for _, idle, _ in self.marks.values())

    def _candidate(self) -> datetime | None:
        if not self.complete:
            return None
        active = [t for t, idle, _ in self.marks.values() if not idle]
        if active:
            if any(t is None for t in active):
                return None  # a partition with a backlog it has not read yet
            # An idle partition stops holding the clock back only on a report at least
            # as recent as the newest report of progress: said earlier (by another
            # worker, say), it may have received since what the others' progress
            # would otherwise overtake. One worker reports all its partitions at once.
            newest = max(w for _, idle, w in self.marks.values() if not idle)
            if any(idle and w < newest for _, idle, w in self.marks.values()):
                return None
            least = min(t for t in active if t is not None)
            if self.mode == "wall" and self.wall is not None and self.wall < least:
                return self.wall
            return least
        if self.mode == "wall":
            return self.wall
        seen = [t for t, _, _ in self.marks.values() if t is not None]
        return max(seen) if seen else None

    # -- what outlives a restart ------------------------------------------------------

    def held(self) -> list[Held]:
        return [entry[3] for entry in sorted(self._buffer)]

    def pending(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "total": self.total,
            "wall": None if self.wall is None else format_time(self.wall),
            "marks": [
                [tp[0], tp[1], None if t is None else format_time(t), idle, format_time(w)]
                for tp, (t, idle, w) in sorted(self.marks.items())
            ],
        }

    def restore(self, pending: dict[str, Any], held: list[Held]) -> None:
        self.mode = pending.get("mode", self.mode)
        self.total = int(pending.get("total", 0))
        wall = pending.get("wall")
        self.wall = None if wall is None else parse_time(wall)
        self.marks = {}
        for topic, p, t, idle, *rest in pending.get("marks", []):
            wall = parse_time(rest[0]) if rest else (self.wall or _EPOCH)
            self.marks[(topic, int(p))] = (None if t is None else parse_time(t), bool(idle), wall)
        self._buffer = [(h.time, h.key, h.offset, h) for h in held]
        heapq.heapify(self._buffer)

    def __len__(self) -> int:
        return len(self._buffer)

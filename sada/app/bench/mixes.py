"""The workloads of ``sada bench``: the same mix of event types at every size.

Cost per event only compares between sizes when the events are the same kind
of work: a creation or a response costs two to three times a vote. Both mixes
therefore keep their proportions whatever the size; what grows is history.

- ``fixed``: every submission lives the same life of ten events (created, six
  votes, one retraction, an acknowledgement and an answer within the hour),
  one submission a minute, so the proportions are exact and the number of
  submissions open at once stays the same at every size.
- ``realistic``: the simulator's history (:func:`~sada.producers.simulator.simulate`)
  of a community of a fixed size, month after month: blocks of the same number
  of submissions over consecutive 30-day windows. Within a block the mix is
  the simulator's (popularity heavy-tailed, deadlines missed, referrals,
  ratings, withdrawals); every block draws it afresh, so it holds at every size.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sada.pipeline.domain.config import Config
from sada.pipeline.domain.errors import SadaError

MIXES = ("fixed", "realistic")
DEFAULT_MIX = "fixed"
START = datetime(2026, 1, 3, tzinfo=UTC)
BLOCK_DAYS = 30.0
BLOCK_SUBMISSIONS = 700  # about 10,000 simulated events a block
FIXED_EVERY = timedelta(minutes=1)  # one new submission a minute
# One submission's life in the fixed mix: (minutes after creation, what).
FIXED_LIFE: tuple[tuple[float, str], ...] = (
    (0.0, "created"),
    (1.0, "support"),
    (2.0, "support"),
    (3.0, "oppose"),
    (4.0, "support"),
    (5.0, "support"),
    (6.0, "oppose"),
    (7.0, "retract"),
    (10.0, "acknowledgement"),
    (40.0, "answer"),
)

Record = tuple[str, bytes, bytes]  # topic, key, value


def generate(
    config: Config,
    n: int,
    seed: int,
    mix: str = DEFAULT_MIX,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Record], Counter[str]]:
    """The first ``n`` events of ``mix``, encoded, with their topics and keys; counts by type."""
    from sada.pipeline.domain.logcodec import dumps as encode
    from sada.producers.events import topic_for

    if mix not in MIXES:
        raise SadaError(f"unknown mix {mix!r}: use one of {', '.join(MIXES)}")
    events = _fixed(config, seed) if mix == "fixed" else _realistic(config, seed)
    records: list[Record] = []
    types: Counter[str] = Counter()
    for event in events:
        records.append((topic_for(event), str(event["subject"]).encode(), encode(event)))
        types[event["type"]] += 1
        if progress is not None and len(records) % 2000 == 0:
            progress(len(records))
        if len(records) >= n:
            break
    if progress is not None:
        progress(len(records))
    return records, types


def _fixed(config: Config, seed: int) -> Iterator[dict[str, Any]]:
    """Submissions of the same ten-event life, one a minute, their events merged by time.

    Lives overlap by 40 minutes, so about 40 submissions are in flight at any
    instant; each is answered long before a deadline, so escalations come
    from none of them and the work per event is the same at every size.
    """
    from sada.producers.simulator.submission import Tracker
    from sada.producers.simulator.world import DEFAULT_SOURCE_PREFIX, World, person

    rng = random.Random(seed)
    # The world's end only bounds the simulator's own planning; this mix plans nothing.
    world = World.build(config, START + timedelta(days=36_500), DEFAULT_SOURCE_PREFIX)
    span = timedelta(minutes=FIXED_LIFE[-1][0])
    in_flight: list[tuple[datetime, int, dict[str, Any]]] = []
    voters = iter(range(10**9))
    i = 0
    while True:
        created = START + FIXED_EVERY * i
        # Every event of earlier submissions stamped before this creation goes first.
        in_flight.sort(key=lambda e: (e[0], e[1]))
        while in_flight and in_flight[0][0] <= created:
            yield in_flight.pop(0)[2]
        tracker = Tracker(world, random.Random(rng.getrandbits(64)), created)
        voter = ""
        for k, (minutes, what) in enumerate(FIXED_LIFE):
            at = created + timedelta(minutes=minutes)
            if what == "created":
                event = tracker.create()
            elif what in ("support", "oppose"):
                voter = person(next(voters) % 200_000)
                event = tracker.vote(at, voter, what)
            elif what == "retract":
                event = tracker.vote(at, voter, None)  # the last voter changes their mind
            else:
                event = tracker.respond(at, what)
            in_flight.append((at, i * len(FIXED_LIFE) + k, event))
        assert created + span >= in_flight[-1][0]
        i += 1


def _realistic(config: Config, seed: int) -> Iterator[dict[str, Any]]:
    """Simulated 30-day blocks of the same community, one after another, for ever."""
    from sada.producers.simulator.history import Simulation
    from sada.producers.simulator.world import DEFAULT_SOURCE_PREFIX

    codes: set[str] = set()  # tracking codes stay unique across blocks
    for block in itertools.count():
        start = START + timedelta(days=BLOCK_DAYS * block)
        sim = Simulation(
            config, seed + block, BLOCK_SUBMISSIONS, start, BLOCK_DAYS, DEFAULT_SOURCE_PREFIX
        )
        sim.world.used_codes = codes
        yield from sim.events()


def describe(types: Counter[str]) -> str:
    """The mix as shares by event type, largest first: ``vote.cast 60%, …``."""
    total = sum(types.values()) or 1
    return ", ".join(
        f"{t.removeprefix('sada.')} {100 * c / total:.0f}%" for t, c in types.most_common()
    )

"""What the gateway can tell, as it answers, of each valid event's fate.

Each valid event of a request gets one result, in request order:

- ``duplicate``: its ``source`` and ``id`` came earlier in the same request, were
  published through this gateway recently (a bounded memory of the last
  :data:`RECENT` keys), or are in the store's ledger (applied or rejected). It is
  not published again: the projector would only absorb it;
- ``pending``: it is about a submission (a vote, a response, a withdrawal, a
  rating) that is neither in the read model, nor created by an event accepted
  earlier in the same request, nor created through this gateway recently. It is
  published; the projector holds it for its submission up to the grace and then
  applies it or rejects it ``unknown_submission``, which
  ``GET /api/v1/events/{id}?source=…`` tells;
- ``accepted``: anything else. It is published and will take effect, unless
  the projector finds what only it can see (a creation whose tracking code
  another submission took meanwhile: ``GET`` tells that too).

The store is read through :class:`Lookup`, injected where the routes are
wired (the gateway never imports the store). Without one, or while it cannot
be read, only the request and the memory count: a re-sent event the memory
has forgotten is answered ``accepted`` (and absorbed downstream), and an event
about a submission not seen here is answered ``pending`` even if it exists.
Several workers each remember what they published; what another one published
a moment ago is known once it is projected. So a result errs only towards
``accepted``/``pending``, whose event is published, never towards ``duplicate``
for an event that was not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from sada.pipeline.domain.errors import StoreError
from sada.pipeline.domain.logcodec import event_key
from sada.pipeline.domain.vocabulary import SUBMISSION_CREATED, GatewayResult

log = logging.getLogger(__name__)

RECENT = 100_000  # keys (and created submission ids) remembered: a few MB at most


class Lookup(Protocol):
    """The read access to the store the gateway needs."""

    def seen(self, keys: Iterable[str]) -> set[str]:
        """Those of the event keys (``source`` + ``id``) already applied or rejected."""
        ...

    def known_submissions(self, ids: Iterable[str]) -> set[str]:
        """Those of the submission ids the read model has."""
        ...


@dataclass(frozen=True, slots=True)
class Candidate:
    """A valid event of a request, as far as its fate is concerned."""

    source: str
    id: str
    type: str
    submission_id: str

    @property
    def key(self) -> str:
        return event_key({"source": self.source, "id": self.id})

    @property
    def status_path(self) -> str:
        """Where its fate is told: ``GET`` this path."""
        return f"/api/v1/events/{quote(self.id, safe='')}?source={quote(self.source, safe='')}"


@dataclass(frozen=True, slots=True)
class Verdict:
    result: GatewayResult
    detail: str | None = None


class _Recent:
    """A set of at most ``capacity`` strings; the oldest added goes first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: dict[str, None] = {}

    def __contains__(self, item: str) -> bool:
        return item in self._items

    def add(self, item: str) -> None:
        self._items.pop(item, None)
        self._items[item] = None
        if len(self._items) > self.capacity:
            del self._items[next(iter(self._items))]


class Outcomes:
    """Judges the valid events of each request and remembers what was published."""

    def __init__(self, lookup: Lookup | None, capacity: int = RECENT) -> None:
        self.lookup = lookup
        self._keys = _Recent(capacity)
        self._created = _Recent(capacity)

    async def judge(self, events: Sequence[Candidate]) -> list[Verdict]:
        """One verdict per event, in order."""
        ledger, known = await self._look_up(events)
        in_request: set[str] = set()
        created: set[str] = set()
        verdicts: list[Verdict] = []
        for e in events:
            key = e.key
            if key in in_request:
                verdicts.append(
                    Verdict("duplicate", "sent earlier in this request; published once")
                )
                continue
            in_request.add(key)
            if key in self._keys or key in ledger:
                verdicts.append(
                    Verdict(
                        "duplicate",
                        "this source and id were published before; not published again. "
                        f"What became of it: GET {e.status_path}",
                    )
                )
                continue
            sid = e.submission_id
            if e.type == SUBMISSION_CREATED:
                created.add(sid)
                verdicts.append(Verdict("accepted"))
            elif sid in created or sid in self._created or sid in known:
                verdicts.append(Verdict("accepted"))
            else:
                verdicts.append(
                    Verdict(
                        "pending",
                        f"published; it waits for its submission {sid!r}, which has not "
                        "arrived yet, and is rejected unknown_submission if it does not come "
                        f"within the grace. What became of it: GET {e.status_path}",
                    )
                )
        return verdicts

    def remember(self, published: Iterable[Candidate]) -> None:
        """``published`` reached Kafka: a later copy is a duplicate, and a creation's
        submission is one that events may name."""
        for e in published:
            self._keys.add(e.key)
            if e.type == SUBMISSION_CREATED:
                self._created.add(e.submission_id)

    async def _look_up(self, events: Sequence[Candidate]) -> tuple[set[str], set[str]]:
        """The events' keys in the ledger and their submissions in the read model, for
        what the memory does not answer; nothing without a store or while it fails."""
        lookup = self.lookup
        if lookup is None or not events:
            return set(), set()
        keys = [e.key for e in events if e.key not in self._keys]
        sids = [
            e.submission_id
            for e in events
            if e.type != SUBMISSION_CREATED and e.submission_id not in self._created
        ]

        def read() -> tuple[set[str], set[str]]:
            return (
                lookup.seen(keys) if keys else set(),
                lookup.known_submissions(sids) if sids else set(),
            )

        try:
            return await asyncio.to_thread(read)
        except StoreError as e:
            log.warning("the gateway answers without the store this time: %s", e)
            return set(), set()

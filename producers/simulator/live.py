"""The live demo: :func:`run_demo`, a backfill of history ending now, then wall-clock traffic."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sada.infra.settings import Settings
from sada.pipeline.domain.config import Config
from sada.pipeline.domain.logcodec import dumps
from sada.producers.events import topic_for
from sada.producers.privacy import pseudonymize_event
from sada.producers.simulator.history import Simulation
from sada.producers.simulator.submission import Tracker
from sada.producers.simulator.world import DEFAULT_SOURCE_PREFIX, PEOPLE, person

log = logging.getLogger(__name__)


async def run_demo(
    settings: Settings,
    config: Config,
    bootstrap: str,
    *,
    seed: int | None = None,
    backfill_days: float = 10.0,
    backfill_submissions: int = 120,
    pace: float = 1.0,
) -> None:
    """Feed demo traffic to ``bootstrap`` until cancelled.

    First the last ``backfill_days`` of history (event times in the past, so
    missed deadlines escalate as soon as the pipeline reads them), then live
    events stamped with the wall clock: new submissions, votes, responses,
    ratings, and one submission whose support climbs past the first two
    support thresholds within a few minutes (past the first within about a
    minute). ``pace`` speeds the live part up (tests); ``seed`` defaults to the
    clock, so each run's ids differ from the last one's. Person ids are
    pseudonymised with ``settings.pseudonym_key`` when it is set, as the
    gateway does. Broker failures end the demo with a warning in the log, never
    the pipeline it feeds.
    """
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    rng = random.Random(time.time_ns() if seed is None else seed)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        await producer.start()
    except KafkaError as e:
        log.warning("demo traffic disabled: cannot reach %s: %s", bootstrap, e)
        return
    try:
        now = datetime.now(UTC)
        history = Simulation(
            config,
            rng.getrandbits(64),
            backfill_submissions,
            now - timedelta(days=backfill_days),
            backfill_days,
            DEFAULT_SOURCE_PREFIX + "/demo",
        )
        futures = []
        for event in history.events():
            futures.append(await _send(producer, event, settings.pseudonym_key))
            if len(futures) % 200 == 0:
                await asyncio.sleep(0)  # generating is CPU work: let the pipeline run too
        await asyncio.gather(*futures)
        log.info("demo: published %d events of backfilled history", len(futures))
        feed = _LiveFeed(history, rng, pace)
        while True:
            for event in feed.tick(datetime.now(UTC)):
                await (await _send(producer, event, settings.pseudonym_key))
            await asyncio.sleep(feed.interval())
    except KafkaError as e:
        log.warning("demo traffic stopped: %s", e)
    except Exception:
        log.exception("demo traffic failed")
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()


async def _send(producer: Any, event: dict[str, Any], key: str | None) -> Any:
    if key:  # the deployment's key: demo people are pseudonymous like real ones
        event = pseudonymize_event(event, key)
    return await producer.send(
        topic_for(event), value=dumps(event), key=event["subject"].encode("utf-8")
    )


class _LiveFeed:
    """Wall-clock traffic after the backfill: a trickle, and one submission going viral."""

    def __init__(self, history: Simulation, rng: random.Random, pace: float) -> None:
        self.world = history.world
        self.rng = rng
        self.pace = max(pace, 0.01)
        self.trackers = [t for t in history.trackers if t.state is not None]
        self.viral: Tracker | None = None
        ladder = self.world.config.ladder
        self.viral_target = (ladder[1] if len(ladder) > 1 else ladder[0]) + 30 if ladder else 60
        self.viral_votes = 0
        self.ratings: list[tuple[datetime, Tracker, str]] = []
        self.started: datetime | None = None

    def interval(self) -> float:
        return self.rng.uniform(0.4, 1.0) / self.pace

    def tick(self, now: datetime) -> list[dict[str, Any]]:
        rng = self.rng
        out: list[dict[str, Any]] = []
        if self.started is None:
            self.started = now
        if self.viral is None:
            self.viral = self._new_submission(
                now, out, kind="suggestion", language="fa", unit_id=self._leaf()
            )
        elif self.viral_votes < self.viral_target:
            # About 1.2 supporters a second: past 50 in under a minute.
            elapsed = (now - self.started).total_seconds() * self.pace
            due = min(self.viral_target, int(elapsed * 1.2))
            while self.viral_votes < due:
                self.viral_votes += 1
                self._vote(self.viral, now, out, "support")
        if rng.random() < 0.08:
            self._new_submission(now, out)
        if rng.random() < 0.35 and self.trackers:
            target = self._popular()
            stance = "support" if rng.random() < 0.85 else "oppose"
            self._vote(target, now, out, stance if rng.random() > 0.05 else None)
        if rng.random() < 0.12:
            self._respond(now, out)
        ripe = [r for r in self.ratings if r[0] <= now]
        self.ratings = [r for r in self.ratings if r[0] > now]
        for _, tracker, closing in ripe:
            out.append(tracker.rate(now, tracker.rating_for(closing)))
        return out

    def _new_submission(
        self,
        now: datetime,
        out: list[dict[str, Any]],
        kind: str | None = None,
        language: str | None = None,
        unit_id: str | None = None,
    ) -> Tracker:
        tracker = Tracker(self.world, random.Random(self.rng.getrandbits(64)), now)
        if kind or language or unit_id:
            tracker.kind = kind or tracker.kind
            tracker.language = language or tracker.language
            tracker.unit_id = unit_id or tracker.unit_id
            tracker.text = self.world.texts.submission(
                tracker.rng,
                kind=tracker.kind,
                language=tracker.language,
                unit_id=tracker.unit_id,
                channel=tracker.channel,
            )
        out.append(tracker.create())
        self.trackers.append(tracker)
        return tracker

    def _vote(
        self, tracker: Tracker, now: datetime, out: list[dict[str, Any]], stance: str | None
    ) -> None:
        self._catch_up(tracker, now)
        voter = person(self.rng.randrange(PEOPLE))
        if stance is None:
            if not tracker.stances:
                return
            voter = self.rng.choice(sorted(tracker.stances))
        out.append(tracker.vote(now, voter, stance))

    def _respond(self, now: datetime, out: list[dict[str, Any]]) -> None:
        open_ones = [t for t in self.trackers if t.is_open and t is not self.viral]
        if not open_ones:
            return
        tracker = self.rng.choice(open_ones)
        self._catch_up(tracker, now)
        if not tracker.is_open:
            return
        assert tracker.state is not None
        if tracker.state.first_response_at is None:
            out.append(tracker.respond(now, "acknowledgement"))
            return
        kind = self.rng.choice(("answer", "answer", "resolution", "rejection"))
        out.append(tracker.respond(now, kind))
        if kind != "rejection" and self.rng.random() < 0.5:
            delay = timedelta(seconds=self.rng.uniform(20, 120) / self.pace)
            self.ratings.append((now + delay, tracker, kind))

    def _leaf(self) -> str:
        """A unit with a parent and no children: support escalations have somewhere to go."""
        units = self.world.config.units
        leaves = [
            u
            for u in units.values()
            if u.parent and not any(v.parent == u.id for v in units.values())
        ]
        return self.rng.choice(leaves).id if leaves else self.world.units[0]

    def _popular(self) -> Tracker:
        """A recent or much-supported submission: what people see on the portal's front page."""
        recent = [t for t in self.trackers[-40:] if t.state and t.state.status != "withdrawn"]
        weights = [1.0 + (t.state.support if t.state else 0) for t in recent]
        return self.rng.choices(recent, weights)[0]

    @staticmethod
    def _catch_up(tracker: Tracker, now: datetime) -> None:
        while tracker.advance_one(now):
            pass

"""The projector stage in a process of its own, so that it does not share a core with ingress.

Both stages are CPU-bound Python; in one interpreter they take turns on one
core however many the machine has. They only meet through the canonical log
and the store, so the projector can run anywhere that reaches both: here, a
child process started with ``spawn`` (no fork of a process holding threads
and sockets).

The parent holds a :class:`ProjectorProcess`, which looks to the worker like
the in-process :class:`~sada.pipeline.stages.projector_stage.ProjectorStage`: it has
a ``state``, ``stats``, ``lag()`` and the same life cycle. The child reports
over a pipe after every batch: its counters, its lag, and the metric
observations the batch made, which the parent replays into its own registry,
so ``/metrics`` looks the same whichever process did the work.

The child stops when told to, and also when the pipe breaks: a parent killed
with SIGKILL leaves no projector behind. Starting, talking and ending follow
the one parent/child protocol of :mod:`sada.infra.child`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from typing import Any

from sada.infra.child import READY, STOP, Child, Parent
from sada.infra.metrics import Metrics
from sada.infra.sizing import fold_state
from sada.pipeline.domain.config import Config
from sada.pipeline.domain.errors import SadaError
from sada.pipeline.domain.ports import StoreFactory
from sada.pipeline.stages.projector_stage import ProjectorStage, ProjectorStats
from sada.pipeline.stages.stage import SESSION_TIMEOUT_MS

log = logging.getLogger(__name__)

START_TIMEOUT = 120.0
STOP_TIMEOUT = 15.0
REPORT_SECONDS = 0.5  # a report also follows every batch; this one carries lag when idle
# What the child says (besides READY and ERROR) and what it is asked (besides STOP).
REPORT = "report"
STOPPED = "stopped"
MEASURE = "measure"
MEASURED = "measured"


class MetricCalls:
    """Records the projector's metric observations, to be replayed in another process.

    Has the methods of :class:`~sada.infra.metrics.Metrics` that the projector stage
    calls; each call is kept as ``(method name, arguments)``.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def escalated(self, to_level: int, reason: str | None) -> None:
        self.calls.append(("escalated", (to_level, reason)))

    def first_response(self, kind: str | None, business_hours: float) -> None:
        self.calls.append(("first_response", (kind, business_hours)))

    def resolved(self, kind: str | None, business_hours: float) -> None:
        self.calls.append(("resolved", (kind, business_hours)))

    def satisfaction(self, unit: str | None, rating: int) -> None:
        self.calls.append(("satisfaction", (unit, rating)))

    def decision_lag(self, seconds: float) -> None:
        self.calls.append(("decision_lag", (seconds,)))

    def event_accepted(
        self, type_: str | None, channel: str | None = None, amount: int = 1
    ) -> None:
        self.calls.append(("event_accepted", (type_, channel, amount)))

    def event_rejected(self, type_: str | None, reason: str | None) -> None:
        self.calls.append(("event_rejected", (type_, reason)))

    def event_duplicate(self, type_: str | None) -> None:
        self.calls.append(("event_duplicate", (type_,)))

    def event_late(self, type_: str | None, amount: int = 1) -> None:
        self.calls.append(("event_late", (type_, amount)))

    def dlq_record(self, reason: str | None) -> None:
        self.calls.append(("dlq_record", (reason,)))

    def take(self) -> list[tuple[str, tuple[Any, ...]]]:
        calls, self.calls = self.calls, []
        return calls


_REPLAYABLE = frozenset(
    name for name in vars(MetricCalls) if not name.startswith("_") and name != "take"
)


class ProjectorProcess:
    """The parent's handle on a projector running in a child process."""

    def __init__(
        self,
        config: Config,
        open_store: StoreFactory,
        metrics: Metrics,
        bootstrap: str,
        group: str = "sada",
        session_ms: int = SESSION_TIMEOUT_MS,
    ):
        self.config = config
        self.group = group
        self.session_ms = session_ms
        self._owned: list[int] = []
        self.degraded: str | None = None
        self.open_store = open_store
        self.metrics = metrics
        self.bootstrap = bootstrap
        self.state = "starting"
        self.stats = ProjectorStats()
        self._lag = 0
        self._child: Child | None = None

    async def start(self) -> None:
        self._child = Child.start(
            _child_main,
            (self.config, self.open_store, self.bootstrap, self.group, self.session_ms),
            name="sada-projector",
            label="the projector process",
        )
        kind, payload = await self._child.receive(START_TIMEOUT)
        if kind != READY:
            await self._reap()
            raise SadaError(f"the projector process did not start: {payload}")
        self.state = "running"

    async def run(self) -> None:
        """Take the child's reports until it stops; raise if it dies or fails."""
        assert self._child is not None
        final = await self._child.expect(STOPPED, handlers={REPORT: self._take_report})
        self._take_report(final)

    def _take_report(self, payload: dict[str, Any]) -> None:
        self.stats = ProjectorStats(**payload["stats"])
        self._lag = payload["lag"]
        self._owned = payload.get("owned", [])
        self.degraded = payload.get("degraded")
        for name, args in payload["calls"]:
            if name in _REPLAYABLE:
                getattr(self.metrics, name)(*args)

    async def lag(self) -> int:
        return self._lag

    def owned(self) -> list[int]:
        return self._owned

    async def measure(self) -> dict[str, Any]:
        """The child's decision state size and peak RSS (for ``sada bench``)."""
        assert self._child is not None
        measured: dict[str, Any] = await self._child.request(MEASURE, MEASURED, timeout=60)
        return measured

    async def stop(self) -> None:
        if self._child is not None:
            self._child.stop()

    async def close(self) -> None:
        self.state = "stopped"
        await self._reap()

    async def _reap(self) -> None:
        if self._child is not None:
            await asyncio.to_thread(self._child.end, STOP_TIMEOUT, force="kill")


# -- the child ------------------------------------------------------------------------------


def _child_main(
    parent: Parent,
    config: Config,
    open_store: StoreFactory,
    bootstrap: str,
    group: str,
    session_ms: int,
) -> None:
    # A SIGTERM to the whole group (systemd, `timeout`) reaches this process too: the
    # parent decides when the projector stops (it asks, then kills).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    asyncio.run(_child(parent, config, open_store, bootstrap, group, session_ms))


async def _child(
    parent: Parent,
    config: Config,
    open_store: StoreFactory,
    bootstrap: str,
    group: str,
    session_ms: int,
) -> None:
    store = open_store()
    calls = MetricCalls()
    stage = ProjectorStage(config, store, calls, bootstrap, group, session_ms)
    try:
        await stage.start()

        async def report(kind: str = REPORT) -> None:
            payload = {
                "stats": dataclasses.asdict(stage.stats),
                "lag": await stage.lag(),
                "calls": calls.take(),
                "owned": stage.owned(),
                "degraded": stage.degraded,
            }
            parent.send(kind, payload)

        stage.on_batch = report
        parent.send(READY)
        running = asyncio.create_task(stage.run())
        commands = asyncio.create_task(_commands(parent, stage))
        ticker = asyncio.create_task(_tick(report))
        done, _ = await asyncio.wait({running, commands}, return_when=asyncio.FIRST_COMPLETED)
        ticker.cancel()
        await stage.stop()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(running, STOP_TIMEOUT)
        commands.cancel()
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        await report(STOPPED)
    finally:
        await stage.close()
        store.close()


async def _commands(parent: Parent, stage: ProjectorStage) -> None:
    """Answer the parent until it says stop or goes away."""
    while True:
        message = await asyncio.to_thread(parent.receive)
        if message is None:
            log.warning("the parent of the projector process went away; stopping")
            return
        if message.kind == STOP:
            return
        if message.kind == MEASURE:
            import resource

            sizes = fold_state(p.fold for p in stage.projectors.values())
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            parent.send(MEASURED, {**sizes, "peak_rss_bytes": peak})


async def _tick(report: Any) -> None:
    while True:
        await asyncio.sleep(REPORT_SECONDS)
        await report()

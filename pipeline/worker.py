"""The worker: wires its stages (ingress, projector, notary) to a store and a broker; its health.

The projector runs in a process of its own when the database allows it.
Readers outside (metrics, dashboard, ``/healthz``) use the small read
interface :class:`~sada.pipeline.domain.ports.PipelineView` — :meth:`Worker.clock`,
:meth:`Worker.lag`, :meth:`Worker.stages_up`, :meth:`Worker.health` — never
the stages themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sada.consumers.store import SqlStore
from sada.infra import topics
from sada.infra.metrics import Metrics
from sada.infra.settings import Settings
from sada.pipeline.domain.config import Config
from sada.pipeline.domain.errors import SadaError
from sada.pipeline.domain.note import Signer
from sada.pipeline.stages.ingress_stage import IngressStage
from sada.pipeline.stages.notary_stage import NotaryStage
from sada.pipeline.stages.projector_process import ProjectorProcess
from sada.pipeline.stages.projector_stage import ProjectorStage
from sada.pipeline.stages.stage import EMBEDDED_SESSION_TIMEOUT_MS, SESSION_TIMEOUT_MS

log = logging.getLogger(__name__)

# Stage consumers fetch every few tens of milliseconds: this long without an
# answer means the broker is away.
BROKER_SILENCE_SECONDS = 5.0


class Worker:
    def __init__(
        self,
        settings: Settings,
        config: Config,
        store: SqlStore,
        metrics: Metrics,
        bootstrap: str,
        embedded: bool,
        projector_url: str | None = None,
        signer: Signer | None = None,
    ) -> None:
        """``projector_url``: run the projector in a process of its own, on this database.

        The two stages are CPU-bound; in one process they share one core. An
        in-memory SQLite database cannot be shared with another process, so
        without a URL the projector runs here.

        ``signer``: sign the archive's tree heads with it (the notary stage, in
        this process: the key goes to no other). Without one, nothing is signed.
        """
        self.settings = settings
        self.config = config
        self.store = store
        self.metrics = metrics
        self.bootstrap = bootstrap
        self.embedded = embedded
        self.started = time.time()
        session_ms = EMBEDDED_SESSION_TIMEOUT_MS if embedded else SESSION_TIMEOUT_MS
        self.ingress = IngressStage(settings, config, metrics, bootstrap, session_ms)
        self.projector: ProjectorStage | ProjectorProcess = (
            ProjectorStage(config, store, metrics, bootstrap, settings.group, session_ms)
            if projector_url is None
            else ProjectorProcess(
                config,
                functools.partial(SqlStore, projector_url),
                metrics,
                bootstrap,
                settings.group,
                session_ms,
            )
        )
        self.notary: NotaryStage | None = (
            None
            if signer is None
            else NotaryStage(
                store, signer, settings.deployment, bootstrap, settings.checkpoint_seconds
            )
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.failure: str | None = None

    def _stages(self) -> list[Any]:
        stages: list[Any] = [self.ingress, self.projector]
        return stages if self.notary is None else [*stages, self.notary]

    async def start(self) -> None:
        await self.projector.start()
        await self.ingress.start()
        if self.notary is not None:
            await self.notary.start()
        self._tasks = [
            asyncio.create_task(self._guard("ingress", self.ingress.run)),
            asyncio.create_task(self._guard("projector", self.projector.run)),
        ]
        if self.notary is not None:
            self._tasks.append(asyncio.create_task(self._guard("notary", self.notary.run)))

    async def _guard(self, name: str, fn: Callable[[], Awaitable[None]]) -> None:
        try:
            await fn()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.failure = f"{name} stage failed: {type(e).__name__}: {e}"
            log.exception("%s stage failed", name)

    async def wait(self) -> None:
        """Until a stage ends (it only ends on stop or failure)."""
        if self._tasks:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)

    async def stop(self) -> None:
        for stage in self._stages():
            await stage.stop()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, timeout=5)
        if self.notary is not None:
            # A last round: the records applied since the last one get their checkpoint.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.notary.sign_now(), timeout=10)
        for stage in self._stages():
            await stage.close()

    @property
    def ok(self) -> bool:
        return (
            self.failure is None
            and all(s.state == "running" for s in self._stages())
            and not any(t.done() for t in self._tasks)
        )

    async def joined(self, timeout: float = 60.0) -> None:
        """Until both stages own partitions in their groups (or ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while not (self.ingress.owned() and self.projector.owned()):
            if self.failure is not None or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.05)

    def clock(self) -> datetime | None:
        """The pipeline clock: the least clock of the log partitions, as stored.

        Read from the store, so every worker gives the same answer, whichever
        partitions it projects.
        """
        try:
            clocks = [c.clock for c in self.store.checkpoints() if c.clock is not None]
        except SadaError:
            return None
        return min(clocks) if clocks else None

    async def lag(self) -> int:
        return await self.projector.lag()

    def stages_up(self) -> dict[str, bool]:
        healthy = self.failure is None
        up = {
            "ingress": healthy and self.ingress.state == "running",
            "projector": healthy and self.projector.state == "running",
        }
        if self.notary is not None:
            up["notary"] = healthy and self.notary.state == "running"
        return up

    def degraded(self) -> str | None:
        """Why a stage cannot make progress now (it retries by itself), or None."""
        silent = self.ingress.silent_for()
        if silent > BROKER_SILENCE_SECONDS:
            return f"broker {self.bootstrap}: no answer for {silent:.0f} s"
        return self.projector.degraded

    async def health(self) -> dict[str, Any]:
        clock = self.clock()
        projector = self.projector.stats
        degraded = self.degraded()
        status = "ok" if self.ok and degraded is None else ("degraded" if self.ok else "failing")
        return {
            "status": status,
            "failure": self.failure,
            "degraded": degraded,
            "broker": {"bootstrap": self.bootstrap, "embedded": self.embedded},
            "group": self.settings.group,
            "topics": [spec.name for spec in topics.TOPICS],
            "workers": {
                "ingress": {
                    **self.ingress.describe(),
                    # Totals of what was decided, over the partitions this worker projects.
                    "accepted": projector.accepted,
                    "rejected": projector.rejected,
                    "duplicates": projector.duplicates,
                    "late": projector.late,
                    "buffered": projector.held,
                },
                "projector": {
                    "state": self.projector.state,
                    "group": f"{self.settings.group}-projector",
                    "owned": self.projector.owned(),
                    "applied": projector.applied,
                    "escalations": projector.escalations,
                    "published": projector.published,
                    "dlq": projector.dlq,
                    "fenced": projector.fenced,
                    "lag": await self.lag(),
                },
                **(
                    {}
                    if self.notary is None
                    else {
                        "notary": {
                            "state": self.notary.state,
                            "signed": self.notary.signed,
                            "published": self.notary.published,
                        }
                    }
                ),
            },
            "clock": clock.astimezone(UTC).isoformat() if clock else None,
            "uptime_seconds": round(time.time() - self.started, 3),
            "now": datetime.now(UTC).isoformat(),
        }

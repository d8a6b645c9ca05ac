"""The worker: runs the ingress and projector stages and reports health.

The projector runs in a process of its own when the database allows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from sada import topics
from sada.config import Config
from sada.consumers.store import SqlStore
from sada.metrics import Metrics
from sada.pipeline.ingress_stage import IngressStage
from sada.pipeline.projector_process import ProjectorProcess
from sada.pipeline.projector_stage import ProjectorStage
from sada.settings import Settings

log = logging.getLogger(__name__)


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
    ) -> None:
        """``projector_url``: run the projector in a process of its own, on this database.

        The two stages are CPU-bound; in one process they share one core. An
        in-memory SQLite database cannot be shared with another process, so
        without a URL the projector runs here.
        """
        self.settings = settings
        self.config = config
        self.store = store
        self.metrics = metrics
        self.bootstrap = bootstrap
        self.embedded = embedded
        self.started = time.time()
        self.ingress = IngressStage(settings, config, metrics, bootstrap)
        self.projector: ProjectorStage | ProjectorProcess = (
            ProjectorStage(config, store, metrics, bootstrap)
            if projector_url is None
            else ProjectorProcess(config, projector_url, metrics, bootstrap)
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.failure: str | None = None

    async def start(self) -> None:
        await self.projector.start()
        await self.ingress.start()
        self._tasks = [
            asyncio.create_task(self._guard("ingress", self.ingress.run)),
            asyncio.create_task(self._guard("projector", self.projector.run)),
        ]

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
        await self.ingress.stop()
        await self.projector.stop()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, timeout=5)
        await self.ingress.close()
        await self.projector.close()

    @property
    def ok(self) -> bool:
        return (
            self.failure is None
            and all(s.state == "running" for s in (self.ingress, self.projector))
            and not any(t.done() for t in self._tasks)
        )

    async def health(self) -> dict[str, Any]:
        clock = self.ingress.ingress.clock
        return {
            "status": "ok" if self.ok else "failing",
            "failure": self.failure,
            "broker": {"bootstrap": self.bootstrap, "embedded": self.embedded},
            "topics": [spec.name for spec in topics.TOPICS],
            "workers": {
                "ingress": {
                    "state": self.ingress.state,
                    "received": self.ingress.stats.received,
                    "accepted": self.ingress.stats.released,
                    "rejected": self.ingress.stats.rejected,
                    "duplicates": self.ingress.stats.duplicates,
                    "late": self.ingress.stats.late,
                    "buffered": self.ingress.lag(),
                },
                "projector": {
                    "state": self.projector.state,
                    "applied": self.projector.stats.applied,
                    "escalations": self.projector.stats.escalations,
                    "published": self.projector.stats.published,
                    "lag": await self.projector.lag(),
                },
            },
            "clock": clock.astimezone(UTC).isoformat() if clock else None,
            "uptime_seconds": round(time.time() - self.started, 3),
            "now": datetime.now(UTC).isoformat(),
        }

"""``sada bench --workers N``: N ``sada run`` processes in one group, measured from outside.

Each worker is what an operator starts for availability: ``sada run
--bootstrap B --database D`` with the group, the pseudonym key and the
signing key the others have, a data directory and an HTTP port of its own.
The bench watches them only through ``/healthz`` (what each has settled and
applied) and ``/proc`` (the CPU time of each worker and of the processes it
started, its projector among them), so nothing of the bench runs inside them.

The CPU cost per event is the CPU time all worker processes spent between
the first publish and the last record applied, divided by the events: with
more workers the elapsed time may shrink, the CPU per event should not grow.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from sada.app.bench.load import GO, PUBLISHED
from sada.app.bench.plan import STALL_SECONDS
from sada.infra import topics
from sada.infra.broker import free_port
from sada.infra.child import READY, Child
from sada.infra.settings import Settings
from sada.pipeline.domain.errors import SadaError

if TYPE_CHECKING:  # imported where used: ``sada --help`` need not load the pipeline
    from sada.app.bench.scratch import Infra, Scratch
    from sada.consumers.store import SqlStore

START_SECONDS = 120.0  # every worker joined and owning its share, or the bench stops
STOP_SECONDS = 30.0
POLL_SECONDS = 0.05
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class WorkerGroup:
    """N ``sada run`` processes sharing one group, one broker and one database."""

    def __init__(
        self, n: int, settings: Settings, bootstrap: str, database_url: str, group: str
    ) -> None:
        if n < 1:
            raise SadaError(f"--workers must be at least 1, got {n}")
        self.n = n
        self.settings = settings
        self.bootstrap = bootstrap
        self.database_url = database_url
        self.group = group
        self._dir = Path(tempfile.mkdtemp(prefix="sada-bench-workers-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.logs: list[Path] = []

    def __enter__(self) -> WorkerGroup:
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _start(self) -> None:
        from sada.infra.signing import default_key_name, write_signer
        from sada.pipeline.domain.note import Signer

        s = self.settings
        key_file = self._dir / "signing.key"
        write_signer(key_file, Signer.generate(default_key_name(s.deployment)))
        # One deployment: every worker needs the same pseudonym and signing keys.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SADA_")}
        env.update(
            {
                "SADA_KAFKA_BOOTSTRAP": self.bootstrap,
                "SADA_DATABASE_URL": self.database_url,
                "SADA_GROUP": self.group,
                "SADA_CLOCK": s.clock,
                "SADA_IDLE_SECONDS": str(s.idle_seconds),
                "SADA_TICK_SECONDS": str(s.tick_seconds),
                "SADA_GRACE_SECONDS": str(s.grace_seconds),
                "SADA_PARTITIONS": str(s.partitions),
                "SADA_PSEUDONYM_KEY": secrets.token_hex(32),
                "SADA_SIGNING_KEY_FILE": str(key_file),
                "SADA_LOG_LEVEL": "WARNING",
            }
        )
        if s.config_path is not None:
            env["SADA_CONFIG"] = str(s.config_path)
        for i in range(self.n):
            port = free_port()
            data = self._dir / f"worker-{i}"
            data.mkdir()
            log_path = self._dir / f"worker-{i}.log"
            with log_path.open("wb") as log_file:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "sada.app.cli", "run", "--port", str(port)],
                    env={**env, "SADA_DATA_DIR": str(data)},
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C on the bench reaches them only through it
                )
            self.procs.append(proc)
            self.ports.append(port)
            self.logs.append(log_path)
            if i == 0:
                # The first one migrates the store and claims the pseudonym key's
                # fingerprint; the others start once it serves.
                self._wait_serving(0)
        for i in range(1, self.n):
            self._wait_serving(i)

    def _wait_serving(self, i: int) -> None:
        deadline = time.monotonic() + START_SECONDS
        while self._health(i) is None:
            self._check_alive()
            if time.monotonic() > deadline:
                raise SadaError(f"worker {i} did not serve /healthz within {START_SECONDS:g} s")
            time.sleep(0.1)

    def _check_alive(self) -> None:
        for i, proc in enumerate(self.procs):
            if proc.poll() is not None:
                tail = self.logs[i].read_text(errors="replace").strip().splitlines()[-5:]
                raise SadaError(
                    f"worker {i} exited with code {proc.returncode}: " + " | ".join(tail)
                )

    def _health(self, i: int) -> dict[str, Any] | None:
        url = f"http://127.0.0.1:{self.ports[i]}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return dict(json.load(response))
        except urllib.error.HTTPError as e:  # 503 while degraded: the body still says what
            with contextlib.suppress(ValueError):
                return dict(json.load(e))
            return None
        except (OSError, ValueError):
            return None

    def healths(self) -> list[dict[str, Any]]:
        self._check_alive()
        out = []
        for i in range(self.n):
            h = self._health(i)
            if h is None:
                raise SadaError(f"worker {i} stopped answering /healthz")
            if h.get("failure"):
                raise SadaError(f"worker {i} failed: {h['failure']}")
            out.append(h)
        return out

    def wait_joined(self, partitions: int) -> None:
        """Until every input and log partition is owned by exactly one worker, and all say ok."""
        want_in = {f"{t}/{p}" for t in topics.INPUT_TOPICS for p in range(partitions)}
        want_log = set(range(partitions))
        deadline = time.monotonic() + START_SECONDS
        while True:
            hs = self.healths()
            ingress = [x for h in hs for x in h["workers"]["ingress"]["owned"]]
            projector = [x for h in hs for x in h["workers"]["projector"]["owned"]]
            if (
                all(h["status"] == "ok" for h in hs)
                and sorted(ingress) == sorted(want_in)
                and sorted(int(p) for p in projector) == sorted(want_log)
            ):
                return
            if time.monotonic() > deadline:
                raise SadaError(
                    f"the {self.n} workers did not share every partition within "
                    f"{START_SECONDS:g} s (ingress owns {len(ingress)} of {len(want_in)}, "
                    f"projectors {len(projector)} of {len(want_log)})"
                )
            time.sleep(0.2)

    def counts(self) -> tuple[int, int]:
        """(inputs settled by ingress, log records applied by projectors), over all workers."""
        settled = applied = 0
        for h in self.healths():
            ing = h["workers"]["ingress"]
            settled += ing["forwarded"] + ing["rejected_here"]
            applied += ing["accepted"] + ing["rejected"] + ing["duplicates"]
        return settled, applied

    def until_applied(self, expected: int, started: float) -> tuple[float, float]:
        """As :func:`~sada.app.bench.probe.until_applied`, from the workers' ``/healthz``."""
        ingress_done: float | None = None
        last, moved = (-1, -1), time.perf_counter()
        while True:
            settled, applied = self.counts()
            now = time.perf_counter()
            if settled >= expected and ingress_done is None:
                ingress_done = now
            if ingress_done is not None and applied >= expected:
                return ingress_done, now
            if (settled, applied) != last:
                last, moved = (settled, applied), now
            elif now - moved > STALL_SECONDS:
                raise SadaError(
                    f"the workers made no progress for {STALL_SECONDS:g} s ({settled:,} of "
                    f"{expected:,} inputs settled, {applied:,} applied); logs in {self._dir}"
                )
            time.sleep(POLL_SECONDS)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) of every worker process and everything each started."""
        return sum(_proc_stat(pid)[0] for pid in self._tree())

    def peak_rss_bytes(self) -> int:
        """The sum of each process's own peak resident set (VmHWM)."""
        return sum(_peak_rss(pid) for pid in self._tree())

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    children.setdefault(_proc_stat(int(entry.name))[1], []).append(int(entry.name))
        out: list[int] = []
        todo = [p.pid for p in self.procs if p.poll() is None]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(children.get(pid, ()))
        return out


def _proc_stat(pid: int) -> tuple[float, int]:
    """(CPU seconds, parent pid) of a live process, from ``/proc/<pid>/stat``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0, -1
    fields = text[text.rindex(")") + 2 :].split()  # the name may hold spaces
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS, int(fields[1])


def _peak_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def end_to_end(
    child: Child,
    n: int,
    workers: int,
    settings: Settings,
    infra: Infra,
    scratch: Scratch,
    detail: dict[str, Any],
    out: TextIO,
) -> SqlStore:
    """Publish the workload into ``workers`` fresh ``sada run`` processes; the store they leave."""
    tag = f"[{n:,}]"
    infra.reset_topics()
    store = scratch.new(f"live-{n}")
    url = scratch.url_for(store)
    if url is None:
        scratch.drop(store)
        raise SadaError("--workers needs a database other processes can open, not in-memory")
    group = f"sada-bench-{uuid.uuid4().hex[:12]}"
    try:
        with WorkerGroup(workers, settings, infra.bootstrap, url, group) as procs:
            procs.wait_joined(settings.partitions)
            child.expect_blocking(READY)
            cpu_before = procs.cpu_seconds()
            started = time.perf_counter()
            child.send(GO)
            ingress_done, finished = procs.until_applied(n, started)
            cpu = procs.cpu_seconds() - cpu_before
            published = child.expect_blocking(PUBLISHED)
            seconds = finished - started
            detail["e2e"] = {
                "workers": workers,
                "seconds": seconds,
                "ingress_seconds": ingress_done - started,
                "publish_seconds": published,
                "cpu_seconds": cpu,
                "peak_rss_bytes": procs.peak_rss_bytes(),
                "healthz": procs.healths(),
            }
    except BaseException:
        scratch.drop(store)
        raise
    print(
        f"{tag} {workers} worker(s): end-to-end {n / seconds:,.0f} events/s, "
        f"CPU {1e6 * cpu / n:,.0f} µs/event (ingress settled all at "
        f"{ingress_done - started:.2f} s, projectors at {seconds:.2f} s; "
        f"publishing took {published:.2f} s)",
        file=out,
        flush=True,
    )
    return store

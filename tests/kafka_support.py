"""Apache Kafka for the tests: one KRaft node (broker and controller) run from its jars.

The jars are ``org.apache.kafka:kafka_2.13`` and its runtime dependencies from
Maven Central, fetched by ``ops/kafka/fetch.sh`` into
``${SADA_KAFKA_HOME:-~/.cache/sada-kafka/VERSION}/libs``; ``SADA_KAFKA_LIBS``
names another directory of jars. There is no fallback: without the jars the
tests that need Kafka fail and say how to fetch them.

:class:`ApacheKafka` formats a log directory on disk once
(``kafka.tools.StorageTool format --standalone``) and runs ``kafka.Kafka`` on
two free ports of 127.0.0.1, a PLAINTEXT listener for clients and a
CONTROLLER listener for the quorum. It can be killed (SIGKILL) and started
again on the same directory and the same ports, so what was written survives
as it would on a real server.

Imported by the tests and by ``conftest.py`` as a sibling module: ``tests/``
has no ``__init__.py``, so pytest's default import mode puts it on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from kafka.errors import KafkaError

from sada.infra.broker import accepts_connections, admin_client, die_with_parent_hook
from sada.pipeline.domain.errors import BrokerError

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
POM = REPO / "ops" / "kafka" / "pom.xml"
FETCH_SCRIPT = "ops/kafka/fetch.sh"
LOG_FILE_NAME = "kafka.log"
PROPERTIES_FILE_NAME = "server.properties"

# A modest heap: the test machine has two cores and runs Sada, PostgreSQL and
# the tests beside the broker. Kafka's own start script uses these GC settings.
# Only the quick JIT compiler: on two busy cores it starts the broker a few
# seconds sooner, and test loads never need the optimising one.
JAVA_OPTIONS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:TieredStopAtLevel=1",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    "-Dorg.slf4j.simpleLogger.showDateTime=true",
    "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSS",
)


class KafkaStartError(RuntimeError):
    """Apache Kafka could not be set up or did not come up; the message ends with its log."""


def kafka_version(pom: Path = POM) -> str:
    """The Kafka version ``ops/kafka/pom.xml`` fetches (``<kafka.version>``)."""
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", pom.read_text())
    if match is None:
        raise KafkaStartError(f"no <kafka.version> in {pom}")
    return match.group(1)


def default_libs_dir(env: dict[str, str] | None = None) -> Path:
    """Where ``ops/kafka/fetch.sh`` puts the jars: ``${SADA_KAFKA_HOME}/libs``."""
    env = dict(os.environ) if env is None else env
    home = env.get("SADA_KAFKA_HOME") or str(
        Path.home() / ".cache" / "sada-kafka" / kafka_version()
    )
    return Path(home) / "libs"


def kafka_libs(env: dict[str, str] | None = None) -> Path:
    """The directory of Kafka's jars: ``SADA_KAFKA_LIBS``, else :func:`default_libs_dir`.

    Raises :class:`KafkaStartError`, saying how to fetch them, if there is no
    ``kafka_2.13`` jar there.
    """
    env = dict(os.environ) if env is None else env
    named = env.get("SADA_KAFKA_LIBS")
    libs = Path(named) if named else default_libs_dir(env)
    if not any(libs.glob("kafka_2.13-*.jar")):
        where = f"SADA_KAFKA_LIBS={named}" if named else str(libs)
        raise KafkaStartError(
            f"no Apache Kafka jars (kafka_2.13-*.jar) in {where}: run {FETCH_SCRIPT} "
            "(it needs Java 17 and Maven) and, if it put them elsewhere, "
            "point SADA_KAFKA_LIBS at the directory it prints"
        )
    return libs


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports of 127.0.0.1 that are unused at this moment."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            ports.append(int(sock.getsockname()[1]))
    return ports


class ApacheKafka:
    """One Apache Kafka node (KRaft broker and controller) on 127.0.0.1, as a child process.

    ``directory`` holds ``server.properties``, the log directory ``data/`` and
    the broker's output, ``kafka.log``. The ports are picked at the first
    :meth:`start` and kept, so a restarted broker has the bootstrap address it
    had. Topics are created automatically, as Kafka's default has it, with
    ``num.partitions=4`` and replication factor 1.

    Start it from a thread that lives as long as the broker (normally the main
    thread): the broker is killed when the thread that started it exits, so a
    crashed test run leaves no broker behind.
    """

    def __init__(
        self,
        directory: Path,
        *,
        libs: Path | None = None,
        java: str = "java",
        start_timeout: float = 120.0,
    ) -> None:
        self.directory = Path(directory)
        self._libs = libs
        self._java = java
        self._start_timeout = start_timeout
        self._ports: list[int] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # --- addresses and state ------------------------------------------------------

    @property
    def port(self) -> int:
        """The client (PLAINTEXT) port; fixed at the first :meth:`start`."""
        if self._ports is None:
            raise KafkaStartError("Apache Kafka has no port until it is started")
        return self._ports[0]

    @property
    def controller_port(self) -> int:
        if self._ports is None:
            raise KafkaStartError("Apache Kafka has no port until it is started")
        return self._ports[1]

    @property
    def bootstrap(self) -> str:
        """The bootstrap address clients use, ``127.0.0.1:PORT``."""
        return f"{HOST}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / LOG_FILE_NAME

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the broker's output, or ``""``."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # --- life cycle ---------------------------------------------------------------

    def start(self, timeout: float | None = None) -> ApacheKafka:
        """Start the broker, formatting its log directory the first time.

        Returns once it answers a metadata request with a leader for every
        partition it holds. Raises :class:`KafkaStartError`, with the end of
        its log, if it exits or does not answer within ``timeout`` seconds.
        """
        if self.running():
            raise KafkaStartError(f"Apache Kafka on {self.bootstrap} is already running")
        timeout = self._start_timeout if timeout is None else timeout
        libs = self._libs if self._libs is not None else kafka_libs()
        classpath = str(libs / "*")
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._ports is None:
            self._ports = _free_ports(2)
        properties = self.directory / PROPERTIES_FILE_NAME
        properties.write_text(self._server_properties())
        if not (self.data_dir / "meta.properties").exists():
            self._format(classpath, properties)
        with self.log_path.open("ab") as log:
            log.write(f"--- kafka.Kafka on {self.bootstrap} ---\n".encode())
            log.flush()
            try:
                self._proc = subprocess.Popen(
                    [self._java, *JAVA_OPTIONS, "-cp", classpath, "kafka.Kafka", str(properties)],
                    cwd=self.directory,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    close_fds=True,
                    process_group=0,
                    preexec_fn=die_with_parent_hook(),
                )
            except OSError as e:
                raise KafkaStartError(f"cannot run {self._java!r}: {e.strerror or e}") from e
        try:
            self._wait_until_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would, and wait for it to exit. Idempotent."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self, grace: float = 60.0) -> int | None:
        """SIGTERM the broker and wait for its controlled shutdown; SIGKILL after ``grace``.

        Returns its exit code (``None`` if it was never started). Idempotent.
        """
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def __enter__(self) -> ApacheKafka:
        if not self.running():
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running() else "stopped"
        where = self.bootstrap if self._ports is not None else "no port yet"
        return f"ApacheKafka({where}, {state}, {self.directory})"

    # --- internals ----------------------------------------------------------------

    def _server_properties(self) -> str:
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "controller.quorum.bootstrap.servers": f"{HOST}:{self.controller_port}",
            "log.dirs": str(self.data_dir),
            "num.partitions": "4",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            # One node has no use for 50 partitions of each internal topic, and
            # creating and loading them costs seconds at every (re)start.
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.num.partitions": "4",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # A broker killed with SIGKILL cannot register again until the
            # controller gives up its old session; 9 s by default, 5 s here.
            "broker.session.timeout.ms": "5000",
            "broker.heartbeat.interval.ms": "1000",
            # A test keeps its records however old their timestamps are.
            "log.retention.ms": "-1",
            # Fewer threads than a production broker: two cores are shared.
            "num.network.threads": "2",
            "num.io.threads": "4",
            "background.threads": "4",
        }
        lines = [f"{key}={value}" for key, value in settings.items()]
        return "# Written by tests/kafka_support.py for a test broker.\n" + "\n".join(lines) + "\n"

    def _format(self, classpath: str, properties: Path) -> None:
        """``kafka.tools.StorageTool format --standalone`` with a fresh cluster id."""
        storage_tool = [self._java, "-Xmx256m", "-cp", classpath, "kafka.tools.StorageTool"]
        cluster_id = self._run_tool([*storage_tool, "random-uuid"]).strip().splitlines()[-1]
        self._run_tool(
            [*storage_tool, "format", "-t", cluster_id, "-c", str(properties), "--standalone"]
        )

    def _run_tool(self, command: list[str]) -> str:
        try:
            done = subprocess.run(
                command,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=120,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise KafkaStartError(f"{' '.join(command[-3:])}: {e}") from e
        with self.log_path.open("ab") as log:
            log.write(f"--- {' '.join(command)} ---\n".encode())
            log.write(done.stderr + done.stdout)
        if done.returncode != 0:
            raise KafkaStartError(
                f"StorageTool exited with code {done.returncode}:\n{self.log_tail()}"
            )
        return done.stdout.decode("utf-8", "replace")

    def _wait_until_ready(self, timeout: float) -> None:
        started = time.monotonic()
        deadline = started + timeout
        proc = self._proc
        assert proc is not None
        while True:
            try:
                code = proc.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                code = None
            if code is not None:
                raise KafkaStartError(
                    f"Apache Kafka exited with code {code} before answering on "
                    f"{self.bootstrap}; the end of {self.log_path}:\n{self.log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise KafkaStartError(
                    f"Apache Kafka did not answer on {self.bootstrap} within {timeout:g}s; "
                    f"the end of {self.log_path}:\n{self.log_tail()}"
                )
            if accepts_connections(HOST, self.port, min(0.5, remaining)) and _serves_all_partitions(
                self.bootstrap, min(5.0, remaining)
            ):
                return


def _serves_all_partitions(bootstrap: str, timeout: float) -> bool:
    """Whether the broker answers metadata with a leader for every partition it holds.

    After a restart the broker answers before it leads every partition again;
    a client that came too early would see errors no test means to test.
    """
    try:
        with admin_client(bootstrap, timeout) as admin:
            topics: list[dict[str, Any]] = admin.describe_topics()
    except (BrokerError, KafkaError, OSError, ValueError):
        return False
    return all(
        topic["error_code"] == 0
        and all(p["error_code"] == 0 and p["leader_id"] >= 0 for p in topic["partitions"])
        for topic in topics
    )

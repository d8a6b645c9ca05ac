"""The one parent/child process protocol: a spawned child and its parent, talking over a pipe.

A child is started with ``spawn`` (no fork of a process that holds threads and
sockets) and handed its end of a duplex :func:`multiprocessing.Pipe`. Both
ends exchange messages ``(kind, payload)``: the parent reads them as
:class:`Message`, the kinds are the caller's, except :data:`ERROR`, which a
child sends (with ``"TypeName: text"``) when its target raises, :data:`STOP`,
which asks a child to finish, and :data:`READY` by convention.

The child ignores SIGINT: Ctrl-C reaches the whole process group, and it is the
parent that decides when and how its children end (asked with :data:`STOP`,
then terminated or killed if they do not). A child whose parent dies sees its
pipe close (:meth:`Parent.receive` returns None) and can stop by itself.

The parent's side (:class:`Child`) takes messages one at a time
(:meth:`Child.poll`), waits for one kind while handling others in passing
(:meth:`Child.expect`, or :meth:`Child.expect_blocking` outside an event loop),
asks and waits for the reply (:meth:`Child.request`), and ends the child
(:meth:`Child.stop`, :meth:`Child.end`).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Literal, NamedTuple

from sada.pipeline.domain.errors import SadaError

READY = "ready"  # the usual first word of a child that has started
ERROR = "error"
STOP = "stop"
POLL_SECONDS = 0.5  # one wait for a message in a thread; short, so none outlives its loop


class Message(NamedTuple):
    """One message, as either side receives it (it travels as a plain tuple)."""

    kind: str
    payload: Any = None


Handlers = Mapping[str, Callable[[Any], None]]


class Parent:
    """The child's end of the pipe."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def send(self, kind: str, payload: Any = None) -> None:
        self._conn.send((kind, payload))

    def receive(self) -> Message | None:
        """The parent's next message (blocking); None once the parent has gone away."""
        try:
            return Message._make(self._conn.recv())
        except (EOFError, OSError):
            return None


def _child_main(target: Callable[..., None], conn: Connection, args: tuple[Any, ...]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when this process stops
    try:
        target(Parent(conn), *args)
    except BaseException as e:  # the parent reports it; this process has no one to tell
        with contextlib.suppress(OSError, ValueError):
            conn.send((ERROR, f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


class Child:
    """The parent's handle on a child process; ``label`` names it in errors ("the … process")."""

    def __init__(self, process: BaseProcess, conn: Connection, label: str) -> None:
        self.process = process
        self.label = label
        self._conn = conn
        self._stopped = False
        self._reading = False
        self._replies: dict[str, deque[asyncio.Future[Any]]] = {}

    @classmethod
    def start(
        cls, target: Callable[..., None], args: tuple[Any, ...], *, name: str, label: str
    ) -> Child:
        """Spawn ``target(parent, *args)`` in a daemon process (ended when this one exits)."""
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(
            target=_child_main, args=(target, child, args), name=name, daemon=True
        )
        process.start()
        child.close()  # the child's copy is the only one left: its exit closes the pipe
        return cls(process, parent, label)

    # -- talking ----------------------------------------------------------------------------

    def send(self, kind: str, payload: Any = None) -> None:
        """Send a message; a child that has gone away is found out by the next read instead."""
        with contextlib.suppress(OSError, ValueError):
            self._conn.send((kind, payload))

    def poll(self, wait: float = 0.0) -> Message | None:
        """The next message within ``wait`` seconds, else None; raises once the child is gone."""
        try:
            if self._conn.poll(wait):
                return Message._make(self._conn.recv())
        except (EOFError, OSError) as e:
            self.process.join(1.0)  # the pipe closes as the child exits: wait for its code
            raise SadaError(f"{self.label} exited ({self._exit_code()})") from e
        # A child that wrote its last message and exited since the wait: read that first.
        if not self.process.is_alive() and not self._conn.poll():
            raise SadaError(f"{self.label} exited ({self._exit_code()})")
        return None

    async def receive(self, timeout: float | None = None) -> Message:
        """The next message, waited for in a thread so the event loop goes on."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            # One trip to a thread for both the wait and the read.
            message = await asyncio.to_thread(self.poll, POLL_SECONDS)
            if message is not None:
                return message
            if deadline is not None and time.monotonic() > deadline:
                raise SadaError(f"{self.label} said nothing for {timeout:g} s")

    async def expect(
        self,
        wanted: str,
        *,
        handlers: Handlers | None = None,
        timeout: float | None = None,
        check: Callable[[], None] | None = None,
    ) -> Any:
        """The payload of the next ``wanted`` message.

        Messages of a kind in ``handlers`` are handed to it meanwhile, and
        replies awaited by :meth:`request` to their callers; :data:`ERROR`, or
        any other kind, raises. ``check`` runs between waits (it raises to give up).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self._reading = True
        try:
            while True:
                message = await asyncio.to_thread(self.poll, POLL_SECONDS)
                if message is not None:
                    got, payload = self._take(message, wanted, handlers)
                    if got:
                        return payload
                if check is not None:
                    check()
                if deadline is not None and time.monotonic() > deadline:
                    raise SadaError(f"no {wanted!r} from {self.label} within {timeout:g} s")
        finally:
            self._reading = False

    def expect_blocking(self, wanted: str, *, handlers: Handlers | None = None) -> Any:
        """:meth:`expect` for a caller without an event loop: blocks until ``wanted`` comes."""
        while True:
            message = self.poll(POLL_SECONDS)
            if message is not None:
                got, payload = self._take(message, wanted, handlers)
                if got:
                    return payload

    async def request(
        self,
        kind: str,
        reply: str,
        *,
        payload: Any = None,
        timeout: float | None,
        handlers: Handlers | None = None,
        check: Callable[[], None] | None = None,
    ) -> Any:
        """Send ``kind``, then the payload of the ``reply`` that answers it.

        While another task is in :meth:`expect`, that task takes the reply and
        hands it over here; otherwise this one reads until it comes.
        """
        if not self._reading:
            self.send(kind, payload)
            return await self.expect(reply, handlers=handlers, timeout=timeout, check=check)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        waiting = self._replies.setdefault(reply, deque())
        waiting.append(future)
        self.send(kind, payload)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError as e:
            raise SadaError(f"no {reply!r} from {self.label} within {timeout:g} s") from e
        finally:
            with contextlib.suppress(ValueError):
                waiting.remove(future)

    def _take(self, message: Message, wanted: str, handlers: Handlers | None) -> tuple[bool, Any]:
        kind, payload = message
        if kind == wanted:
            return True, payload
        if kind == ERROR:
            raise SadaError(f"{self.label} failed: {payload}")
        waiting = self._replies.get(kind)
        if waiting is not None:  # a reply: to its caller, or dropped if it came too late
            if waiting:
                future = waiting.popleft()
                if not future.done():
                    future.set_result(payload)
            return False, None
        if handlers is not None and kind in handlers:
            handlers[kind](payload)
            return False, None
        raise SadaError(f"{self.label} sent {kind!r} while {wanted!r} was expected")

    def _exit_code(self) -> str:
        return f"exit code {self.process.exitcode}"

    # -- ending -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the child to finish (once): it ends its work and exits by itself."""
        if not self._stopped:
            self._stopped = True
            self.send(STOP)

    def end(
        self,
        grace: float,
        *,
        force: Literal["terminate", "kill"] = "terminate",
        after: float = 5.0,
    ) -> None:
        """Wait ``grace`` seconds for the child to exit, then ``force`` it; close the pipe."""
        self.process.join(grace)
        if self.process.is_alive():
            if force == "kill":
                self.process.kill()
            else:
                self.process.terminate()
            self.process.join(after)
        self._conn.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        """A child left normally has ``grace`` to finish; one left on an error ends at once."""
        self.stop()
        self.end(10.0 if kind is None else 0.0)

"""The parent/child process protocol: errors, replies, SIGINT and ending, on real spawned children.

The children's targets live here: a spawned child imports this module by name
to find them.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from sada.infra.child import READY, STOP, Child, Parent
from sada.pipeline.domain.errors import SadaError


def _echo(parent: Parent) -> None:
    """Answers ``ping`` with a tick and ``pong``, ``tickle`` with a tick; ``bye`` on STOP."""
    parent.send(READY)
    while (message := parent.receive()) is not None:
        if message.kind == "tickle":
            parent.send("tick", 0)
        elif message.kind == "ping":
            parent.send("tick", 1)
            parent.send("pong", message.payload)
        elif message.kind == STOP:
            parent.send("bye")
            return


def _fail(parent: Parent, text: str) -> None:
    raise ValueError(text)


def _exit(parent: Parent, code: int) -> None:
    os._exit(code)


def _deaf(parent: Parent) -> None:
    """Reads everything, STOP included, and never finishes by itself."""
    parent.send(READY)
    while parent.receive() is not None:
        pass


def _start(target: object, *args: object) -> Child:
    return Child.start(target, args, name="sada-test-child", label="the test child")  # type: ignore[arg-type]


def test_a_failing_child_is_reported_with_its_error() -> None:
    with (
        _start(_fail, "boom") as child,
        pytest.raises(SadaError, match=r"the test child failed: ValueError: boom"),
    ):
        child.expect_blocking(READY)


def test_a_child_that_dies_silently_is_found_out() -> None:
    with (
        _start(_exit, 3) as child,
        pytest.raises(SadaError, match=r"the test child exited \(exit code 3\)"),
    ):
        child.expect_blocking(READY)


def test_a_message_of_an_unexpected_kind_is_an_error() -> None:
    with _start(_echo) as child:
        child.send("ping", 1)
        with pytest.raises(SadaError, match="sent 'ready' while 'pong' was expected"):
            child.expect_blocking("pong")


def test_request_gets_its_reply_whether_or_not_another_task_is_reading() -> None:
    async def scenario(child: Child) -> None:
        ticks: list[int] = []
        reading = asyncio.Event()

        def tick(n: int) -> None:
            ticks.append(n)
            reading.set()

        await child.expect(READY)
        # Nobody else reads: the request reads for itself, handling ticks on the way.
        assert await child.request("ping", "pong", payload=1, timeout=30, handlers={"tick": tick})
        # A reader takes everything until "bye"; the reply is handed over to the request.
        reading.clear()
        reader = asyncio.create_task(child.expect("bye", handlers={"tick": tick}))
        child.send("tickle")
        await reading.wait()  # the reader is reading
        assert await child.request("ping", "pong", payload=2, timeout=30) == 2
        child.stop()
        await reader
        assert ticks == [1, 0, 1]

    with _start(_echo) as child:
        asyncio.run(scenario(child))
    assert child.process.exitcode == 0


def test_the_child_ignores_sigint_and_the_parent_decides_when_it_stops() -> None:
    with _start(_echo) as child:
        child.expect_blocking(READY)  # the child ignores SIGINT before its target runs
        assert child.process.pid is not None
        os.kill(child.process.pid, signal.SIGINT)
        child.send("ping", "still here")
        assert child.expect_blocking("pong", handlers={"tick": lambda _: None}) == "still here"
        child.stop()
        child.expect_blocking("bye")
    assert child.process.exitcode == 0


def test_end_forces_a_child_that_does_not_stop() -> None:
    child = _start(_deaf)
    child.expect_blocking(READY)
    child.stop()
    child.end(0.2, force="terminate")
    assert child.process.exitcode == -signal.SIGTERM

    child = _start(_deaf)
    child.expect_blocking(READY)
    child.end(0.2, force="kill")
    assert child.process.exitcode == -signal.SIGKILL


def test_leaving_on_an_error_ends_the_child_at_once() -> None:
    with pytest.raises(KeyboardInterrupt), _start(_deaf) as child:
        child.expect_blocking(READY)
        raise KeyboardInterrupt
    assert child.process.exitcode == -signal.SIGTERM

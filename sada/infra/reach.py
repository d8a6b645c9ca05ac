"""Fail fast: is a Kafka cluster reachable at all, within a few seconds, said in one line?

Kafka clients retry an unreachable bootstrap for their whole request timeout
(30-40 s) and log every attempt. Before handing a bootstrap to one, a command
asks each of its servers, over a plain socket, the one question every Kafka
broker answers (ApiVersions, version 0): if none answers within
``SADA_CONNECT_TIMEOUT`` seconds, it stops with one line naming them and why
(refused, timed out, not Kafka).
"""

from __future__ import annotations

import socket
import struct
import time

from sada.pipeline.domain.errors import BrokerError


def servers(bootstrap: str) -> list[tuple[str, int]]:
    """``host:port`` pairs of a bootstrap list (``a:9092,b:9092``; IPv6 in brackets)."""
    found = []
    for item in bootstrap.split(","):
        item = item.strip()
        if not item:
            continue
        item = item.split("://", 1)[-1]
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit():
            raise BrokerError(f"bootstrap {item!r} is not HOST:PORT")
        found.append((host.strip("[]") or "localhost", int(port)))
    if not found:
        raise BrokerError("no bootstrap server given")
    return found


def require_kafka(bootstrap: str, timeout: float) -> None:
    """Return once a bootstrap server answers as Kafka does; else a one-line BrokerError."""
    deadline = time.monotonic() + timeout
    errors = []
    for host, port in servers(bootstrap):
        left = deadline - time.monotonic()
        if left <= 0:
            errors.append(f"{host}:{port}: not tried, time is up")
            continue
        problem = _ask(host, port, left)
        if problem is None:
            return
        errors.append(f"{host}:{port}: {problem}")
    raise BrokerError(
        f"no Kafka broker answers at {bootstrap} ({'; '.join(errors)}); "
        f"waited up to {timeout:g} s (SADA_CONNECT_TIMEOUT)"
    )


_CLIENT = b"sada-probe"
# ApiVersions (key 18) version 0, correlation id 1: size, key, version, correlation, client id.
_REQUEST = struct.pack(">ihhih", 2 + 2 + 4 + 2 + len(_CLIENT), 18, 0, 1, len(_CLIENT)) + _CLIENT


def _ask(host: str, port: int, timeout: float) -> str | None:
    """None if ``host:port`` answers an ApiVersions request; else why not, in a few words."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            sock.sendall(_REQUEST)
            head = _read(sock, 8)
    except TimeoutError:
        return "no answer in time"
    except OSError as e:
        return e.strerror or type(e).__name__
    if head is None:
        return "closed the connection: not a Kafka broker?"
    size, correlation = struct.unpack(">ii", head)
    if correlation != 1 or not 0 < size < 1 << 24:
        return "answered, but not as a Kafka broker does"
    return None


def _read(sock: socket.socket, n: int) -> bytes | None:
    got = b""
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        if not chunk:
            return None
        got += chunk
    return got

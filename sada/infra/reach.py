"""Fail fast: is a Kafka cluster reachable at all, within a few seconds, said in one line?

Kafka clients retry an unreachable bootstrap for their whole request timeout
(30-40 s) and log every attempt. Before handing a bootstrap to one, a command
opens a plain TCP connection to each of its servers: if none accepts within
``SADA_CONNECT_TIMEOUT`` seconds, it stops with one line naming them. A server
that accepts may still not be Kafka; the client then says so itself.
"""

from __future__ import annotations

import socket
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
    """Return once one bootstrap server accepts a TCP connection; else one-line BrokerError."""
    deadline = time.monotonic() + timeout
    errors = []
    targets = servers(bootstrap)
    for host, port in targets:
        left = max(0.1, deadline - time.monotonic())
        try:
            with socket.create_connection((host, port), timeout=min(left, timeout)):
                return
        except OSError as e:
            errors.append(f"{host}:{port}: {e.strerror or type(e).__name__}")
    raise BrokerError(
        f"Kafka at {bootstrap} is unreachable ({'; '.join(errors)}); "
        f"waited up to {timeout:g} s (SADA_CONNECT_TIMEOUT)"
    )

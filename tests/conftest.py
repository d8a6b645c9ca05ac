"""Shared pytest fixtures.

- ``broker``: the bootstrap address (``"127.0.0.1:PORT"``) of one embedded
  Tansu broker started for the whole test session and stopped at its end.
  Tansu keeps everything in memory and is shared by every test that asks for
  it, so tests use topic names, keys or consumer groups of their own (or the
  Sada topics through idempotent :func:`sada.infra.topics.ensure_topics`) and never
  assume a topic is empty unless they created it. Its log is written to the
  session's temporary directory, under ``tansu/``.
- ``free_port``: a TCP port on 127.0.0.1 that is unused when the test starts.

Every test runs on every invocation: nothing is skipped, and anything slow is
kept slow only as long as it has to be.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sada.infra.broker import EmbeddedBroker
from sada.infra.broker import free_port as _free_port


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with EmbeddedBroker(log_dir=tmp_path_factory.mktemp("tansu")) as embedded:
        yield embedded.bootstrap


@pytest.fixture
def free_port() -> int:
    return _free_port()

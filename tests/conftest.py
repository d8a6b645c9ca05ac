"""Shared pytest fixtures.

- ``broker``: the bootstrap address (``"127.0.0.1:PORT"``) of one embedded
  Tansu broker started for the whole test session and stopped at its end.
  Tansu keeps everything in memory and is shared by every test that asks for
  it, so tests use topic names, keys or consumer groups of their own (or the
  Sada topics through idempotent :func:`sada.infra.topics.ensure_topics`) and never
  assume a topic is empty unless they created it. Its log is written to the
  session's temporary directory, under ``tansu/``.
- ``free_port``: a TCP port on 127.0.0.1 that is unused when the test starts.
- ``kafka``: the bootstrap address of one Apache Kafka node (KRaft, broker and
  controller; :mod:`kafka_support`) started for the whole session, with its log
  directory on disk under the session's temporary directory, in ``kafka/``.
  Shared like ``broker``: tests bring topic names and groups of their own.
- ``kafka_broker_factory``: starts Apache Kafka nodes of the test's own, each in
  a directory of its own under ``tmp_path``, for tests that kill and restart a
  broker; every node still running is stopped when the test ends.

Apache Kafka runs from the jars ``ops/kafka/fetch.sh`` fetches (or
``SADA_KAFKA_LIBS``); without them the Kafka tests fail and say so.

Every test runs on every invocation: nothing is skipped, and anything slow is
kept slow only as long as it has to be.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e_support import BROKERS
from hypothesis import settings
from kafka_support import ApacheKafka

from sada.infra.broker import EmbeddedBroker
from sada.infra.broker import free_port as _free_port

# Property tests judge what is decided, never how fast: on a loaded machine a
# per-example deadline only makes them flaky (speed lives in ``sada bench``).
settings.register_profile("sada", deadline=None)
settings.load_profile("sada")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with EmbeddedBroker(log_dir=tmp_path_factory.mktemp("tansu")) as embedded:
        yield embedded.bootstrap


@pytest.fixture
def free_port() -> int:
    return _free_port()


@pytest.fixture(scope="session")
def apache_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ApacheKafka(tmp_path_factory.mktemp("kafka")) as node:
        yield node.bootstrap


@pytest.fixture(scope="session")
def kafka(apache_kafka: str) -> str:
    return apache_kafka


@pytest.fixture(scope="module", params=BROKERS)
def broker_kind(request: pytest.FixtureRequest) -> str:
    """The broker matrix for suites that start brokers of their own: its name."""
    kind: str = request.param
    return kind


@pytest.fixture(scope="module", params=BROKERS)
def any_broker(request: pytest.FixtureRequest) -> str:
    """The broker matrix: a test taking this runs once on Tansu and once on Apache Kafka."""
    name = "broker" if request.param == "tansu" else "apache_kafka"
    bootstrap: str = request.getfixturevalue(name)
    return bootstrap


@pytest.fixture
def kafka_broker_factory(tmp_path: Path) -> Iterator[Callable[[], ApacheKafka]]:
    """Call it for a started Apache Kafka node of the test's own; stopped after the test."""
    nodes: list[ApacheKafka] = []

    def start() -> ApacheKafka:
        node = ApacheKafka(tmp_path / f"kafka-{len(nodes)}")
        nodes.append(node)
        return node.start()

    yield start
    for node in nodes:
        node.stop()

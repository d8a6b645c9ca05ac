"""Infrastructure of a run: the broker and its topics, and scratch stores.

Each phase starts from empty Sada topics (deleted and created again, the
ingress group's offsets reset) and fresh stores: temporary SQLite files by
default, scratch schemas on a PostgreSQL ``--database``. On a ``--bootstrap``
Kafka the bench refuses to start if any ``sada.*`` topic holds records, and
leaves the topics empty when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from sada.infra import topics
from sada.infra.broker import EmbeddedBroker, admin_client
from sada.infra.reading import partitions_of
from sada.infra.settings import Settings
from sada.pipeline.domain.errors import BrokerError, SadaError

if TYPE_CHECKING:  # imported where used: ``sada --help`` need not load the pipeline
    from sada.consumers.store import SqlStore

log = logging.getLogger(__name__)

RAW_TOPIC = "sada.bench.raw"


class Infra:
    """The broker of the whole run: embedded, or the ``--bootstrap`` one (checked to be unused)."""

    def __init__(self, settings: Settings, out: TextIO) -> None:
        self.settings = settings
        self.out = out
        self.broker: EmbeddedBroker | None = None
        self.bootstrap = settings.kafka_bootstrap or ""
        self.embedded = settings.kafka_bootstrap is None

    @property
    def describe(self) -> str:
        if self.broker is not None:
            return f"embedded Tansu at {self.bootstrap}"
        return f"Kafka at {self.bootstrap}"

    def __enter__(self) -> Infra:
        if self.embedded:
            self.broker = EmbeddedBroker(broker_bin=self.settings.broker_bin).start()
            self.bootstrap = self.broker.bootstrap
        else:
            busy = asyncio.run(_topics_with_records(self.bootstrap))
            if busy:
                raise SadaError(
                    f"the Kafka at {self.bootstrap} holds records in {', '.join(busy)}; "
                    "sada bench deletes and recreates the sada.* topics, so it needs a "
                    "scratch cluster"
                )
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.broker is None and self.bootstrap:
                try:
                    delete_topics(self.bootstrap, [RAW_TOPIC])
                    self.reset_topics()  # leave the cluster's Sada topics empty
                except Exception as e:  # cleanup must not hide the run's own outcome
                    log.warning("could not empty the Sada topics at %s: %s", self.bootstrap, e)
        finally:
            if self.broker is not None:
                self.broker.stop()

    def reset_topics(self) -> None:
        """Empty Sada topics: delete them and create them again.

        Each run's workers join consumer groups of their own, so no committed
        offset of an earlier run applies to the new topics.
        """
        delete_topics(self.bootstrap, [t.name for t in topics.TOPICS])
        topics.ensure_topics(self.bootstrap, self.settings.partitions)


def delete_topics(bootstrap: str, names: Sequence[str], timeout: float = 60.0) -> None:
    """Delete those of ``names`` that exist and wait until the broker no longer lists them."""
    from kafka.errors import KafkaError

    try:
        with admin_client(bootstrap) as admin:
            present = [n for n in names if n in set(admin.list_topics())]
            if not present:
                return
            admin.delete_topics(present, timeout_ms=int(timeout * 1000))
            deadline = time.monotonic() + timeout
            while set(present) & set(admin.list_topics()):
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"topics still listed {timeout:g} s after deletion: {present}"
                    )
                time.sleep(0.1)
    except KafkaError as e:
        raise BrokerError(f"cannot delete topics at {bootstrap}: {e}") from e


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from kafka.errors import KafkaError

    try:
        with admin_client(bootstrap) as admin:
            response = admin.create_topics(
                {name: {"num_partitions": partitions, "replication_factor": -1}},
                raise_errors=False,
            )
            for topic in response["topics"]:
                if topic["error_code"] != 0:
                    raise BrokerError(f"cannot create {name}: {topic.get('error_message')}")
            admin.wait_for_topics([name], timeout_ms=30_000)
    except KafkaError as e:
        raise BrokerError(f"cannot create {name} at {bootstrap}: {e}") from e


async def _topics_with_records(bootstrap: str) -> list[str]:
    """Sada topics at ``bootstrap`` that hold at least one record (ListOffsets > 0 suffices)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        await consumer.start()
    except KafkaError as e:
        raise BrokerError(f"cannot reach Kafka at {bootstrap}: {e}") from e
    try:
        tps = [
            TopicPartition(t.name, p)
            for t in topics.TOPICS
            for p in await partitions_of(consumer, t.name)
        ]
        ends = await consumer.end_offsets(tps) if tps else {}
        return sorted({tp.topic for tp, end in ends.items() if end > 0})
    finally:
        await consumer.stop()


class Scratch:
    """Fresh, migrated stores on demand; all of them removed when the run ends.

    No ``--database``: SQLite files in a temporary directory. A SQLite URL:
    files in a temporary directory beside that file (same disk). A PostgreSQL
    URL: one schema per store in that database; the database's own tables are
    not touched.
    """

    def __init__(self, database: str | None) -> None:
        from sqlalchemy.engine import URL, make_url
        from sqlalchemy.exc import ArgumentError

        self._dir: Path | None = None
        self._memory = False
        self._pg: URL | None = None
        # id -> (store, its scratch schema, its URL with the password, for a second process)
        self._stores: dict[int, tuple[SqlStore, str | None, str]] = {}
        self._token = uuid.uuid4().hex[:8]
        if database is None:
            self._dir = Path(tempfile.mkdtemp(prefix="sada-bench-"))
            self.describe = f"SQLite files in {self._dir}"
            return
        try:
            url = make_url(database)
        except ArgumentError as e:
            raise SadaError(f"invalid database URL: {e}") from e
        backend = url.get_backend_name()
        if backend == "sqlite":
            if (url.database or "") in ("", ":memory:"):
                self._memory = True
                self.describe = "in-memory SQLite"
            else:
                parent = Path(url.database or ".").resolve().parent
                parent.mkdir(parents=True, exist_ok=True)
                self._dir = Path(tempfile.mkdtemp(prefix="sada-bench-", dir=parent))
                self.describe = f"SQLite files in {self._dir}"
        elif backend == "postgresql":
            self._pg = url
            self.describe = (
                f"scratch schemas sada_bench_{self._token}_* in "
                f"{url.render_as_string(hide_password=True)}"
            )
        else:
            raise SadaError(f"unsupported database {backend!r}: use sqlite or postgresql")

    def __enter__(self) -> Scratch:
        return self

    def __exit__(self, *exc: object) -> None:
        for store, _schema, _url in list(self._stores.values()):
            self.drop(store)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def new(self, name: str) -> SqlStore:
        from sqlalchemy import create_engine, text

        from sada.consumers.store import SqlStore

        schema: str | None = None
        if self._dir is not None:
            url = f"sqlite:///{self._dir / name}.db"
        elif self._memory:
            url = "sqlite://"
        else:
            assert self._pg is not None
            schema = f"sada_bench_{self._token}_{name}".replace("-", "_")
            admin = create_engine(self._pg)
            try:
                with admin.begin() as conn:
                    conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            except Exception as e:
                raise SadaError(f"cannot create scratch schema {schema}: {e}") from e
            finally:
                admin.dispose()
            given = self._pg.query.get("options") or ""
            if not isinstance(given, str):
                given = " ".join(given)
            options = f"{given} -csearch_path={schema}"
            url = self._pg.update_query_dict({"options": options.strip()}).render_as_string(
                hide_password=False
            )
        store = SqlStore(url)
        store.migrate()
        self._stores[id(store)] = (store, schema, url)
        return store

    def url_for(self, store: SqlStore) -> str | None:
        """The URL another process opens ``store`` with; None for in-memory SQLite."""
        entry = self._stores.get(id(store))
        return None if self._memory or entry is None else entry[2]

    def drop(self, store: SqlStore) -> None:
        """Close ``store`` and remove its file or schema."""
        from sqlalchemy import create_engine, text

        entry = self._stores.pop(id(store), None)
        store.close()
        if entry is None:
            return
        schema = entry[1]
        if schema is not None and self._pg is not None:
            admin = create_engine(self._pg)
            try:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            except Exception as e:  # cleanup must not hide the run's own outcome
                log.warning("could not drop scratch schema %s: %s", schema, e)
            finally:
                admin.dispose()
        elif self._dir is not None:
            path = Path(store.url.removeprefix("sqlite:///"))
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    Path(f"{path}{suffix}").unlink()

"""``sada run``: the whole pipeline on one machine.

Without a bootstrap it starts the embedded broker (Tansu, in memory), restores
the archive into it (so a restart on the same data directory loses nothing),
creates the topics, runs the worker and serves the HTTP API. With
``--bootstrap`` / ``SADA_KAFKA_BOOTSTRAP`` it uses that Kafka instead. The
signing key of the archive's checkpoints is read (or, by default, made in the
data directory) and checked against the deployment's before anything starts.
Ctrl-C (or SIGTERM) stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import threading
from typing import Any, TextIO

from aiohttp import web
from prometheus_client import CollectorRegistry, disable_created_metrics

from sada.app import discovery
from sada.app.commands.common import (
    add_connection_arguments,
    connect_url,
    resolve_config,
    resolve_settings,
)
from sada.app.logs import configure_logging
from sada.app.production import check_production
from sada.consumers.store import SqlStore
from sada.consumers.webhooks import Deliverer, DeliveryPolicy
from sada.infra.broker import EmbeddedBroker, port_is_free
from sada.infra.datadir import DataDirLock
from sada.infra.metrics import Metrics
from sada.infra.pseudonym_key import FINGERPRINT_NAME, fingerprint, resolve_key
from sada.infra.reach import require_kafka
from sada.infra.settings import Settings, webhook_keys
from sada.infra.signing import load_signer
from sada.infra.topics import ensure_topics
from sada.pipeline.domain.config import Config
from sada.pipeline.domain.errors import BrokerError, SadaError, SettingsError
from sada.pipeline.domain.note import Signer

HELP = "run the pipeline: embedded broker (unless --bootstrap), worker, HTTP API"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_connection_arguments(parser)
    parser.add_argument("--host", help="HTTP bind address (SADA_HTTP_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port (SADA_HTTP_PORT, 6066)")
    parser.add_argument("--broker-port", type=int, help="embedded broker port (default: free)")
    parser.add_argument("--partitions", type=int, help="partitions per topic (SADA_PARTITIONS)")
    parser.add_argument("--clock", choices=["wall", "event"], help="pipeline clock (SADA_CLOCK)")
    parser.add_argument("--demo", action="store_true", help="also feed realistic demo traffic")
    parser.add_argument(
        "--production",
        action="store_true",
        help="refuse demo settings: demo university, demo keys, no pseudonym key (SADA_ENV)",
    )


def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    if threading.current_thread() is threading.main_thread():
        # Until the event loop takes the signals over: SIGTERM stops as Ctrl-C does.
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(args, stdout)
    except KeyboardInterrupt:  # stopped while starting: everything started is stopped
        return 0


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace, stdout: TextIO) -> int:
    settings = resolve_settings(args).replace(
        http_host=args.host,
        http_port=args.port,
        partitions=args.partitions,
        clock=args.clock,
        production=args.production or None,
    )
    configure_logging(settings)
    config = resolve_config(settings)
    if settings.production:
        check_production(settings, config)
    keys = webhook_keys(config.webhooks)  # a missing secret stops here, before anything starts
    if not port_is_free(settings.http_host, settings.http_port):
        raise SadaError(
            f"HTTP port {settings.http_host}:{settings.http_port} is already in use "
            "(another sada run?); choose another with --port or SADA_HTTP_PORT"
        )
    if settings.kafka_bootstrap is not None:
        require_kafka(settings.kafka_bootstrap, settings.connect_timeout)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # Its SQLite file or its embedded broker make the data directory this process's own.
    lock = None
    if settings.database_url is None or settings.kafka_bootstrap is None:
        lock = DataDirLock(settings.data_dir).acquire()
    settings = settings.replace(pseudonym_key=resolve_key(settings, create=True))
    assert settings.pseudonym_key is not None
    configure_logging(settings)  # again, now that the key is known: it is masked too
    broker: EmbeddedBroker | None = None
    bootstrap = settings.kafka_bootstrap
    try:
        store = SqlStore(connect_url(settings))
        store.migrate()
        # Before anything starts: a worker whose key is not the deployment's stops here.
        _check_key(store, settings.pseudonym_key)
        signer = load_signer(settings)
        store.register_signing_key(signer.verifier, settings.deployment)
        if bootstrap is None:
            broker = EmbeddedBroker(
                args.broker_port, broker_bin=settings.broker_bin, log_dir=settings.data_dir
            )
            broker.start()
            bootstrap = broker.bootstrap
            discovery.announce(settings.data_dir, bootstrap)
        ensure_topics(bootstrap, settings.partitions, timeout=settings.connect_timeout)
        if broker is not None:
            restored = restore_archive(store, bootstrap)
            if restored:
                print(f"restored {restored} archived log records", file=stdout, flush=True)
        return asyncio.run(
            _serve(settings, config, store, bootstrap, broker, args.demo, signer, stdout, keys)
        )
    finally:
        if broker is not None:
            discovery.withdraw(settings.data_dir, broker.bootstrap)
            broker.stop()
        if lock is not None:
            lock.release()


async def _watch_broker(broker: EmbeddedBroker, worker: Any) -> None:
    """Return (ending ``sada run``) once the embedded broker has died: nothing can progress."""
    while broker.running():
        await asyncio.sleep(0.5)
    worker.failure = (
        f"the embedded broker stopped (exit code {broker.exit_code}); "
        "restart sada run to restore it from the archive"
    )


def _check_key(store: SqlStore, key: str) -> None:
    """Refuse a pseudonym key other than the deployment's: one voter must stay one voter."""
    mine = fingerprint(key)
    theirs = store.claim_key_fingerprint(FINGERPRINT_NAME, mine)
    if theirs != mine:
        raise SettingsError(
            "SADA_PSEUDONYM_KEY",
            f"this worker's pseudonym key (fingerprint {mine[:12]}) is not the deployment's "
            f"(fingerprint {theirs[:12]}): start every worker with the same key",
        )


def restore_archive(store: SqlStore, bootstrap: str) -> int:
    """Put archived canonical-log records back into an empty embedded broker, at their offsets."""
    from kafka import KafkaProducer

    from sada.infra import topics

    rows = store.iter_archive()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    n = 0
    try:
        for row in rows:
            producer.send(topics.LOG, value=row.record, partition=row.partition)
            n += 1
        producer.flush()
    except Exception as e:
        raise BrokerError(f"restoring the archive into the broker failed: {e}") from e
    finally:
        producer.close()
    return n


async def _serve(
    settings: Settings,
    config: Config,
    store: SqlStore,
    bootstrap: str,
    broker: EmbeddedBroker | None,
    demo: bool,
    signer: Signer,
    stdout: TextIO,
    keys: dict[str, bytes],
) -> int:
    from sada.consumers.audit_api import routes as audit_routes
    from sada.consumers.dashboard import routes as dashboard_routes
    from sada.consumers.queue_routes import queue_routes
    from sada.consumers.snapshot import snapshot_source
    from sada.infra.http import build_app
    from sada.pipeline.worker import Worker
    from sada.producers.gateway import routes as gateway_routes
    from sada.producers.simulator import run_demo

    embedded = broker is not None

    disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series double the scrape for no SLA value
    registry = CollectorRegistry()
    metrics = Metrics(registry, config.units.keys(), sla=config.sla)
    # The projector gets a process of its own unless the database lives in this one.
    projector_url = None if store.in_memory else settings.effective_database_url
    worker = Worker(settings, config, store, metrics, bootstrap, embedded, projector_url, signer)
    metrics.set_snapshot_source(
        snapshot_source(worker.store, worker.config, worker, asyncio.get_running_loop())
    )
    await worker.start()
    metrics.webhooks.set_endpoints(keys)
    policy = DeliveryPolicy(
        backoff_seconds=settings.webhook_backoff_seconds,
        give_up_seconds=settings.webhook_give_up_hours * 3600,
    )
    deliverer = Deliverer(store, config.webhooks, keys, metrics.webhooks, policy)
    delivering = asyncio.create_task(deliverer.run())
    notary = worker.notary
    routes = [
        gateway_routes(settings, config, bootstrap, store, metrics.gateway),
        dashboard_routes(worker),
        audit_routes(store, None if notary is None else notary.sign_now),
        queue_routes(worker.store, worker.config),
    ]
    app = build_app(worker, store, registry, routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.http_host, settings.http_port)
    try:
        await site.start()
    except OSError as e:
        await worker.stop()
        raise SadaError(
            f"cannot listen on {settings.http_host}:{settings.http_port}: {e.strerror}"
        ) from e
    print(
        f"sada running: dashboard http://{settings.http_host}:{settings.http_port}/dashboard "
        f"· health http://{settings.http_host}:{settings.http_port}/healthz "
        f"(broker {bootstrap}{' embedded' if embedded else ''}, "
        f"database {settings.shown_database_url})",
        file=stdout,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    demo_task = None
    if demo:
        demo_task = asyncio.create_task(run_demo(settings, config, bootstrap))
    waiter = asyncio.create_task(stop.wait())
    failed = asyncio.create_task(worker.wait())
    watched = {waiter, failed}
    if broker is not None:
        watched.add(asyncio.create_task(_watch_broker(broker, worker)))
    await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
    # Asked to stop: what fails while everything stops (the group's signal reached the
    # broker too) is not the run's failure.
    asked = stop.is_set() and worker.failure is None
    if demo_task is not None:
        demo_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await demo_task
    await runner.cleanup()
    await deliverer.stop()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await asyncio.wait_for(delivering, timeout=15)
    await worker.stop()
    if worker.failure and not asked:
        print(f"sada run: {worker.failure}", file=stdout, flush=True)
        return 1
    return 0

"""Options shared by several subcommands and the settings/config they resolve to."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from sada.app import discovery
from sada.consumers.store import SqlStore
from sada.consumers.store import engine as engine_
from sada.infra.reach import require_kafka
from sada.infra.settings import Settings
from sada.pipeline.domain.config import Config, load_config
from sada.pipeline.domain.errors import SettingsError, StoreError


def add_bootstrap_argument(parser: argparse.ArgumentParser) -> None:
    """``--bootstrap``, and ``--data-dir`` to find a running embedded broker without it."""
    parser.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        help="Kafka bootstrap servers (SADA_KAFKA_BOOTSTRAP; default: the embedded broker "
        "of a sada run on the data directory)",
    )
    parser.add_argument(
        "--data-dir", metavar="DIR", type=Path, help="data directory (SADA_DATA_DIR)"
    )


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    add_bootstrap_argument(parser)
    parser.add_argument(
        "--database", metavar="URL", help="SQLAlchemy database URL (SADA_DATABASE_URL)"
    )
    parser.add_argument(
        "--config", metavar="FILE", type=Path, help="organisation config TOML (SADA_CONFIG)"
    )


def resolve_settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env().replace(
        kafka_bootstrap=getattr(args, "bootstrap", None),
        database_url=getattr(args, "database", None),
        config_path=getattr(args, "config", None),
        data_dir=getattr(args, "data_dir", None),
    )


def require_bootstrap(
    settings: Settings,
    message: str = "no Kafka cluster given; pass --bootstrap HOST:PORT or set it",
) -> str:
    """The Kafka bootstrap servers, or a one-line reason naming the variable.

    Without one given, the embedded broker of a ``sada run`` on the same data
    directory, if one is running. An unreachable cluster is a one-line error
    within ``SADA_CONNECT_TIMEOUT`` seconds.
    """
    found = settings.kafka_bootstrap or discovery.running_bootstrap(settings.data_dir)
    if not found:
        raise SettingsError(
            "SADA_KAFKA_BOOTSTRAP",
            f"{message} (no sada run with an embedded broker on {settings.data_dir})",
        )
    require_kafka(found, settings.connect_timeout)
    return found


def whole_number(text: str, minimum: int = 1) -> int:
    """An argparse type: a whole number of at least ``minimum``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text}") from None
    if value < minimum:
        bound = "0 or more" if minimum == 0 else f"at least {minimum}"
        raise argparse.ArgumentTypeError(f"must be {bound}: {text}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    return whole_number(text, 1)


def count(text: str) -> int:
    """An argparse type: a whole number of at least 0."""
    return whole_number(text, 0)


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text}")
    return value


def resolve_config(settings: Settings) -> Config:
    return load_config(settings.config_path)


def connect_url(settings: Settings) -> str:
    """The database URL, with a connect timeout (``SADA_CONNECT_TIMEOUT``) where it takes one."""
    url = make_url(settings.effective_database_url)
    if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        seconds = max(1, math.ceil(settings.connect_timeout))
        url = url.update_query_dict({"connect_timeout": str(seconds)})
    return url.render_as_string(hide_password=False)


def open_existing_store(settings: Settings) -> SqlStore:
    """The store, for reading only: never created, never migrated.

    A missing SQLite file, or a database without Sada's tables, is a one-line
    error that says where it looked.
    """
    url = make_url(settings.effective_database_url)
    shown = settings.shown_database_url
    if url.get_backend_name() == "sqlite" and not engine_.is_memory(url):
        path = Path(url.database or "")
        if not url.query.get("uri") and not path.is_file():
            raise StoreError(
                f"no Sada database at {path}: give --data-dir of a sada run, or --database URL"
            )
    store = SqlStore(connect_url(settings))
    try:
        with store.engine.connect() as conn:
            found = sa_inspect(conn).has_table("archive")
    except SQLAlchemyError as e:
        store.close()
        raise StoreError(f"cannot read the database {shown}: {engine_.describe(e)}") from e
    if not found:
        store.close()
        raise StoreError(f"the database {shown} holds no Sada store (no sada run has used it)")
    return store

"""Alembic migrations of the store's schema, run from code (no alembic.ini needed).

The scripts ship inside the package, so an installed wheel migrates its own
database: :func:`upgrade` points Alembic at this directory and runs on the
connection it is given, inside the caller's transaction.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

SCRIPT_LOCATION = Path(__file__).resolve().parent


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for these scripts, bound to ``connection`` if given."""
    cfg = Config()
    # ConfigParser interpolates "%": a path holding one must be escaped.
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Bring the schema reachable through ``connection`` up to ``revision``."""
    command.upgrade(alembic_config(connection), revision)

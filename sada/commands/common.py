"""Options shared by several subcommands and the settings/config they resolve to."""

from __future__ import annotations

import argparse
from pathlib import Path

from sada.config import Config, load_config
from sada.settings import Settings


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (SADA_KAFKA_BOOTSTRAP)"
    )
    parser.add_argument(
        "--database", metavar="URL", help="SQLAlchemy database URL (SADA_DATABASE_URL)"
    )
    parser.add_argument(
        "--config", metavar="FILE", type=Path, help="organisation config TOML (SADA_CONFIG)"
    )
    parser.add_argument(
        "--data-dir", metavar="DIR", type=Path, help="data directory (SADA_DATA_DIR)"
    )


def resolve_settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env().replace(
        kafka_bootstrap=getattr(args, "bootstrap", None),
        database_url=getattr(args, "database", None),
        config_path=getattr(args, "config", None),
        data_dir=getattr(args, "data_dir", None),
    )


def resolve_config(settings: Settings) -> Config:
    return load_config(settings.config_path)

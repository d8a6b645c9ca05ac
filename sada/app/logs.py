"""Logging for every command: the configured level, secrets masked, the Kafka clients quiet.

At the default level (``SADA_LOG_LEVEL=WARNING``) only Sada speaks: the Kafka
clients log every retry of an unreachable broker, which a command reports in
one line of its own instead. Every handler masks URL passwords and the
pseudonym key (:mod:`sada.infra.redact`), at every level.
"""

from __future__ import annotations

import logging

from sada.infra.redact import redact_logging
from sada.infra.settings import Settings

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET_AT_DEFAULT = ("kafka", "aiokafka")


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format=FORMAT)
    redact_logging([settings.pseudonym_key or ""])
    if settings.log_level == Settings.log_level:
        for name in QUIET_AT_DEFAULT:
            logging.getLogger(name).setLevel(logging.CRITICAL)

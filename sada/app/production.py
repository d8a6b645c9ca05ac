"""Production mode (``sada run --production``, ``SADA_ENV=production``): no demo left in place.

Refused, each with one line: the shipped demo university (by its file, or a
copy of its units), an integrator whose key is one of the publicly documented
demo keys, and a missing signing key file or pseudonym key (generating keys
into a data directory is the embedded default's convenience; a deployment of
several workers must give them all the same keys).
"""

from __future__ import annotations

import hashlib

from sada.infra.settings import Settings
from sada.pipeline.domain.config import Config, load_config
from sada.pipeline.domain.errors import SettingsError

# Keys printed in the README and the shipped configuration: public, so never valid in production.
DEMO_KEYS = ("demo-portal-key", "demo-telegram-key", "demo-key")


def check_production(settings: Settings, config: Config) -> None:
    """Raise a one-line :class:`SettingsError` for the first demo setting found."""
    demo = load_config(None)
    if settings.config_path is None or set(config.units) == set(demo.units):
        raise SettingsError(
            "SADA_CONFIG",
            "production mode refuses the demo university: give your organisation's "
            "configuration with --config FILE (see ops/sada/production.example.toml)",
        )
    public = {hashlib.sha256(k.encode()).hexdigest() for k in DEMO_KEYS}
    public |= {i.key_sha256.lower() for i in demo.integrators}
    for integrator in config.integrators:
        if integrator.key_sha256.lower() in public:
            raise SettingsError(
                "SADA_CONFIG",
                f"production mode refuses integrator {integrator.id!r}: its key is a "
                "published demo key; give it a key of its own (key_sha256)",
            )
    if settings.signing_key_file is None:
        raise SettingsError(
            "SADA_SIGNING_KEY_FILE",
            "production mode needs the deployment's signing key file, the same for every "
            "worker (make one with: sada audit key --generate FILE)",
        )
    if not settings.pseudonym_key:
        raise SettingsError(
            "SADA_PSEUDONYM_KEY",
            "production mode needs the deployment's pseudonym key, the same for every worker "
            "(e.g. SADA_PSEUDONYM_KEY=$(openssl rand -hex 32), kept secret and backed up)",
        )

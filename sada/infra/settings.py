"""Runtime settings: the one place that reads ``SADA_*`` environment variables.

Command-line flags override the environment through :meth:`Settings.replace`.
A bad value raises :class:`~sada.pipeline.domain.errors.SettingsError` naming the variable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from sada.infra.redact import mask_url
from sada.pipeline.domain.errors import ConfigError, SettingsError
from sada.pipeline.domain.webhooks import Webhook, secret_key

ClockMode = Literal["wall", "event"]
T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """Process settings. Domain rules (calendar, ladder, SLA, units) live in the config file."""

    kafka_bootstrap: str | None = None
    database_url: str | None = None
    config_path: Path | None = None
    data_dir: Path = Path("sada-data")
    http_host: str = "127.0.0.1"
    http_port: int = 6066
    broker_bin: str | None = None
    partitions: int = 4
    clock: ClockMode = "wall"
    idle_seconds: float = 5.0
    tick_seconds: float = 15.0
    grace_seconds: float = 10.0
    max_event_bytes: int = 65536
    max_future_seconds: float = 300.0  # events stamped further ahead are rejected
    group: str = "sada"  # the consumer groups' prefix: workers with one group share the work
    pseudonym_key: str | None = dataclasses.field(default=None, repr=False)
    log_level: str = "WARNING"
    production: bool = False
    connect_timeout: float = 5.0
    webhook_backoff_seconds: float = 5.0  # the first retry's delay, doubling per attempt
    webhook_give_up_hours: float = 24.0
    # The archive's signed checkpoints (see the README, "Proof anyone can check").
    deployment: str = "sada.localhost"  # names the logs (checkpoint origins) and default keys
    signing_key_file: Path | None = None  # else a key generated into the data directory
    checkpoint_seconds: float = 30.0  # a checkpoint at least this often while records arrive

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        d = cls()
        return cls(
            kafka_bootstrap=_get(env, "SADA_KAFKA_BOOTSTRAP", str, d.kafka_bootstrap),
            database_url=_get(env, "SADA_DATABASE_URL", str, d.database_url),
            config_path=_get(env, "SADA_CONFIG", Path, d.config_path),
            data_dir=_get(env, "SADA_DATA_DIR", Path, d.data_dir) or d.data_dir,
            http_host=_get(env, "SADA_HTTP_HOST", str, d.http_host) or d.http_host,
            http_port=_port(env, "SADA_HTTP_PORT", d.http_port),
            broker_bin=_get(env, "SADA_BROKER_BIN", str, d.broker_bin),
            partitions=_positive_int(env, "SADA_PARTITIONS", d.partitions),
            clock=_clock(env, "SADA_CLOCK", d.clock),
            idle_seconds=_positive_float(env, "SADA_IDLE_SECONDS", d.idle_seconds),
            tick_seconds=_positive_float(env, "SADA_TICK_SECONDS", d.tick_seconds),
            grace_seconds=_positive_float(env, "SADA_GRACE_SECONDS", d.grace_seconds),
            max_event_bytes=_positive_int(env, "SADA_MAX_EVENT_BYTES", d.max_event_bytes),
            max_future_seconds=_positive_float(env, "SADA_MAX_FUTURE", d.max_future_seconds),
            group=_get(env, "SADA_GROUP", str, d.group) or d.group,
            pseudonym_key=_get(env, "SADA_PSEUDONYM_KEY", str, d.pseudonym_key),
            log_level=(_get(env, "SADA_LOG_LEVEL", str, d.log_level) or d.log_level).upper(),
            production=_environment(env, "SADA_ENV"),
            connect_timeout=_positive_float(env, "SADA_CONNECT_TIMEOUT", d.connect_timeout),
            webhook_backoff_seconds=_positive_float(
                env, "SADA_WEBHOOK_BACKOFF_SECONDS", d.webhook_backoff_seconds
            ),
            webhook_give_up_hours=_positive_float(
                env, "SADA_WEBHOOK_GIVE_UP_HOURS", d.webhook_give_up_hours
            ),
            deployment=_deployment(env, "SADA_DEPLOYMENT", d.deployment),
            signing_key_file=_get(env, "SADA_SIGNING_KEY_FILE", Path, d.signing_key_file),
            checkpoint_seconds=_positive_float(
                env, "SADA_CHECKPOINT_SECONDS", d.checkpoint_seconds
            ),
        )

    def replace(self, **changes: Any) -> Settings:
        """A copy with the given fields changed; ``None`` values leave a field as it is."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def __repr__(self) -> str:  # the database URL may carry a password; the key stays out
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.repr}
        shown["database_url"] = mask_url(self.database_url) if self.database_url else None
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @property
    def shown_database_url(self) -> str:
        """:attr:`effective_database_url` with its password masked: for output."""
        return mask_url(self.effective_database_url)

    @property
    def effective_database_url(self) -> str:
        """The configured database, or SQLite in the data directory (the embedded default)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'sada.db').resolve()}"

    @property
    def effective_signing_key_file(self) -> Path:
        """The signing key's file: the one named, or the data directory's own."""
        return self.signing_key_file or self.data_dir / "signing.key"


def webhook_keys(
    hooks: Iterable[Webhook], environ: Mapping[str, str] | None = None
) -> dict[str, bytes]:
    """Each webhook's signing key, from its ``secret`` or the variable its ``secret_env`` names.

    A variable unset or not in ``whsec_<base64>`` form raises naming the variable.
    """
    env = os.environ if environ is None else environ
    keys = {}
    for i, h in enumerate(hooks):
        if h.secret is not None:
            keys[h.id] = secret_key(h.secret, f"webhooks[{i}].secret")
            continue
        assert h.secret_env is not None
        value = env.get(h.secret_env, "").strip()
        if not value:
            raise SettingsError(h.secret_env, f"is not set (webhooks[{i}].secret_env of {h.id!r})")
        try:
            keys[h.id] = secret_key(value, h.secret_env)
        except ConfigError as e:
            raise SettingsError(h.secret_env, "must hold whsec_ followed by base64") from e
    return keys


def _get(env: Mapping[str, str], name: str, conv: Callable[[str], T], default: T) -> T:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return conv(raw.strip())
    except (TypeError, ValueError) as e:
        raise SettingsError(name, f"invalid value {raw!r}: {e}") from e


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = _get(env, name, int, default)
    if value <= 0:
        raise SettingsError(name, f"must be a positive integer, got {value}")
    return value


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    value = _get(env, name, float, default)
    if not value > 0:
        raise SettingsError(name, f"must be a positive number, got {value}")
    return value


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    value = _get(env, name, int, default)
    if not 0 <= value <= 65535:
        raise SettingsError(name, f"must be a TCP port (0-65535), got {value}")
    return value


def _deployment(env: Mapping[str, str], name: str, default: str) -> str:
    value: str = _get(env, name, str, default)
    if not value or "+" in value or any(c.isspace() for c in value):
        raise SettingsError(name, f"must be a name without spaces or '+', got {value!r}")
    return value


def _clock(env: Mapping[str, str], name: str, default: ClockMode) -> ClockMode:
    value: str = _get(env, name, str, str(default))
    if value == "wall":
        return "wall"
    if value == "event":
        return "event"
    raise SettingsError(name, f"must be 'wall' or 'event', got {value!r}")


def _environment(env: Mapping[str, str], name: str) -> bool:
    """``SADA_ENV``: ``production`` turns on production mode's checks."""
    value = _get(env, name, str, "development").lower()
    if value not in ("development", "production"):
        raise SettingsError(name, f"must be 'development' or 'production', got {value!r}")
    return value == "production"

"""The deployment's pseudonym key: configured, or generated once into the data directory.

Authors' and voters' ids are hashed with this key before anything lasts
(:mod:`sada.producers.privacy`). ``SADA_PSEUDONYM_KEY`` gives it; without it
the embedded default keeps one in ``DATA_DIR/pseudonym.key`` (mode 0600),
generated on first start. The key itself never goes into the database: anyone
who can read the archive could then test candidate ids against it. The
database keeps only its :func:`fingerprint`, so that a worker started with
another key refuses to start instead of counting one voter twice under two
pseudonyms.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from sada.infra.settings import Settings
from sada.pipeline.domain.errors import SettingsError

KEY_FILE = "pseudonym.key"
FINGERPRINT_NAME = "pseudonym"  # the row of the key's fingerprint in the database
_FINGERPRINT_DOMAIN = b"sada pseudonym key fingerprint\x00"


def key_path(settings: Settings) -> Path:
    return settings.data_dir / KEY_FILE


def resolve_key(settings: Settings, *, create: bool) -> str | None:
    """The configured key, else the data directory's (generated there if ``create``)."""
    if settings.pseudonym_key:
        return settings.pseudonym_key
    path = key_path(settings)
    try:
        text = path.read_text("ascii").strip()
    except FileNotFoundError:
        if not create:
            return None
        return _generate(path)
    except (OSError, UnicodeDecodeError) as e:
        raise SettingsError("SADA_PSEUDONYM_KEY", f"cannot read the key file {path}: {e}") from e
    if not text:
        raise SettingsError("SADA_PSEUDONYM_KEY", f"the key file {path} is empty")
    return text


def fingerprint(key: str) -> str:
    """A one-way fingerprint of ``key``: tells keys apart, reveals nothing of ids."""
    return hashlib.sha256(_FINGERPRINT_DOMAIN + key.encode("utf-8")).hexdigest()


def _generate(path: Path) -> str:
    key = secrets.token_hex(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(key + "\n")
        try:
            # A hard link appears whole or not at all: two processes starting at
            # once keep one key, the first one's.
            os.link(tmp, path)
        except FileExistsError:
            return path.read_text("ascii").strip()
    except OSError as e:
        raise SettingsError("SADA_PSEUDONYM_KEY", f"cannot create {path}: {e.strerror}") from e
    finally:
        tmp.unlink(missing_ok=True)
    return key

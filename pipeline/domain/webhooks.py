"""Webhook endpoints as configured (``[[webhooks]]``), and which notifications each is sent.

Parsing is strict like the rest of the configuration: a bad URL, an unknown
type or a secret in the wrong form raises
:class:`~sada.pipeline.domain.errors.ConfigError` naming the key. Whether a
``secret_env`` variable is set is checked where the environment is read, when
``sada run`` starts.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sada.pipeline.domain.errors import ConfigError
from sada.pipeline.domain.notify import NOTIFICATION_TYPES, Notification

RECIPIENT_KINDS: tuple[str, ...] = ("unit", "monitoring", "author", "follower")
SECRET_PREFIX = "whsec_"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*$")


@dataclass(frozen=True)
class Webhook:
    """An endpoint told of notifications, signed per the Standard Webhooks specification."""

    id: str
    url: str
    secret_env: str | None  # the environment variable holding the secret, or
    secret: str | None  # the secret itself ("whsec_<base64 key>")
    types: tuple[str, ...]
    units: tuple[str, ...] = ()  # when given: notifications to these units and their subtrees
    recipients: tuple[str, ...] = RECIPIENT_KINDS  # the kinds of recipient it is sent


def secret_key(secret: str, key: str) -> bytes:
    """The signing key of a ``whsec_<base64>`` secret; ``key`` names it in errors."""
    if not secret.startswith(SECRET_PREFIX):
        raise ConfigError(key, f"must start with {SECRET_PREFIX!r}")
    try:
        raw = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError) as e:
        raise ConfigError(key, "is not whsec_ followed by base64") from e
    if len(raw) < 16:
        raise ConfigError(key, "the key must be at least 16 bytes")
    return raw


def webhooks(raw: Any, units: Mapping[str, Any]) -> tuple[Webhook, ...]:
    if not isinstance(raw, list):
        raise ConfigError("webhooks", "must be an array of tables ([[webhooks]])")
    out: list[Webhook] = []
    seen: set[str] = set()
    allowed = {"id", "url", "secret_env", "secret", "types", "units", "recipients"}
    for i, t in enumerate(raw):
        key = f"webhooks[{i}]"
        if not isinstance(t, Mapping):
            raise ConfigError(key, "must be a table")
        for k in t:
            if k not in allowed:
                raise ConfigError(
                    f"{key}.{k}", f"unknown key (allowed: {', '.join(sorted(allowed))})"
                )
        wid = t.get("id")
        if not isinstance(wid, str) or not _ID.match(wid):
            raise ConfigError(f"{key}.id", "required: letters, digits, '.', '_' or '-'")
        if wid in seen:
            raise ConfigError(f"{key}.id", f"duplicate webhook id {wid!r}")
        seen.add(wid)
        url = t.get("url")
        if not isinstance(url, str):
            raise ConfigError(f"{key}.url", "required: an http:// or https:// URL")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{key}.url", "required: an http:// or https:// URL")
        env, secret = t.get("secret_env"), t.get("secret")
        if (env is None) == (secret is None):
            raise ConfigError(f"{key}.secret_env", "give exactly one of secret_env and secret")
        if env is not None and (not isinstance(env, str) or not _ENV.match(env)):
            raise ConfigError(f"{key}.secret_env", "must name an environment variable")
        if secret is not None:
            if not isinstance(secret, str):
                raise ConfigError(f"{key}.secret", "must be a string")
            secret_key(secret, f"{key}.secret")
        types = _names(t, "types", key, NOTIFICATION_TYPES, NOTIFICATION_TYPES)
        recipients = _names(t, "recipients", key, RECIPIENT_KINDS, RECIPIENT_KINDS)
        wanted_units = t.get("units", [])
        if not isinstance(wanted_units, list) or not all(isinstance(u, str) for u in wanted_units):
            raise ConfigError(f"{key}.units", "must be a list of unit ids")
        for u in wanted_units:
            if u not in units:
                raise ConfigError(f"{key}.units", f"unknown unit {u!r}")
        out.append(Webhook(wid, url, env, secret, types, tuple(wanted_units), recipients))
    return tuple(out)


def _names(
    t: Mapping[str, Any], name: str, key: str, allowed: tuple[str, ...], default: tuple[str, ...]
) -> tuple[str, ...]:
    value = t.get(name, list(default))
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key}.{name}", f"must be a non-empty list of: {', '.join(allowed)}")
    for v in value:
        if v not in allowed:
            raise ConfigError(f"{key}.{name}", f"unknown {v!r} (known: {', '.join(allowed)})")
    return tuple(dict.fromkeys(value))


def routes(
    hooks: tuple[Webhook, ...], n: Notification, parent_of: Callable[[str], str | None]
) -> list[str]:
    """The ids of the endpoints ``n`` is sent to."""
    kind, _, who = n.recipient.partition(":")
    out = []
    for h in hooks:
        if n.type not in h.types or kind not in h.recipients:
            continue
        if h.units and (kind not in ("unit", "monitoring") or not _within(who, h.units, parent_of)):
            continue
        out.append(h.id)
    return out


def _within(unit: str, roots: tuple[str, ...], parent_of: Callable[[str], str | None]) -> bool:
    seen: set[str] = set()
    cur: str | None = unit
    while cur is not None and cur not in seen:
        if cur in roots:
            return True
        seen.add(cur)
        cur = parent_of(cur)
    return False

"""Secrets kept out of every output: URLs with their password masked, and a logging filter.

A database or Kafka URL may carry a password (``postgresql://user:pw@host/db``);
whatever prints or logs a URL prints :func:`mask_url` of it. The logging
filter masks every password in a URL of any record, and any configured secret
(the pseudonym key), at every level, so that a library that logs its
connection string or a message that quotes a setting cannot leak one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "***"
# scheme://user:password@host — greedy up to the last "@" before the path, so that
# an unencoded "@" inside the password does not leave its tail in view.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)[^\s/]*@")


def mask_url(url: str) -> str:
    """``url`` with the password of its user info, if any, replaced by ``***``."""
    return mask_text(url)


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every URL password and every one of ``secrets`` replaced by ``***``."""
    out = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + "@", text)
    for secret in secrets:
        if secret:
            out = out.replace(secret, MASK)
    return out


class RedactingFilter(logging.Filter):
    """Masks URL passwords and the given secrets in every record that passes a handler."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message, self.secrets)
        if record.exc_info and record.exc_info[1] is not None:
            # A traceback can quote a URL too: render it here, masked.
            record.exc_text = mask_text(
                logging.Formatter().formatException(record.exc_info), self.secrets
            )
            record.exc_info = None
        if masked != message:
            record.msg, record.args = masked, None
        return True


def redact_logging(secrets: Iterable[str] = ()) -> None:
    """Install :class:`RedactingFilter` on every handler of the root logger."""
    flt = RedactingFilter(secrets)
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
            handler.removeFilter(old)
        handler.addFilter(flt)

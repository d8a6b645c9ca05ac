"""Whether an event's ``source`` is in normal form, so that a scope checked on it holds.

A ``source`` is a URI-reference (RFC 3986). Spellings that normalise or
resolve to another reference (RFC 3986 §6.2.2, §5.2.4) could carry an event
past an integrator's scope while naming another source once resolved:
``/integrations/portal/../telegram`` lies under ``/integrations/portal`` as a
string and is ``/integrations/telegram`` as a reference. The gateway accepts
only sources already in normal form, so that the string it checks is the
source every reader sees. Refused: dot segments (also percent-encoded),
percent-encoded unreserved characters, separators or backslashes, lower-case
percent-encodings, empty path segments, backslashes, whitespace and control
characters, and an upper-case scheme or host.
"""

from __future__ import annotations

import re

_PERCENT = re.compile(r"%(..)")
_UNRESERVED = re.compile(r"[A-Za-z0-9\-._~]")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):(.*)", re.S)
_SEPARATORS = {"2F": "/", "5C": "\\", "3F": "?", "23": "#"}


def source_problem(source: str) -> str | None:
    """Why ``source`` is not in normal form, or None if it is."""
    if not source:
        return "it is empty"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in source):
        return "it holds whitespace or control characters"
    if "\\" in source:
        return "it holds a backslash"
    for m in _PERCENT.finditer(source):
        hex_ = m.group(1)
        if not re.fullmatch(r"[0-9A-Fa-f]{2}", hex_):
            return f"{m.group(0)!r} is not a percent-encoding"
        if hex_ != hex_.upper():
            return f"percent-encoding {m.group(0)!r} is not upper-case"
        char = chr(int(hex_, 16))
        if hex_.upper() in _SEPARATORS:
            return f"it holds an encoded separator {m.group(0)} ({_SEPARATORS[hex_.upper()]!r})"
        if _UNRESERVED.fullmatch(char):
            return f"{m.group(0)} encodes {char!r}, which needs no encoding"
    rest = source
    scheme = _SCHEME.fullmatch(source)
    if scheme and not source.startswith("/"):
        if scheme.group(1) != scheme.group(1).lower():
            return "its scheme is not lower-case"
        rest = scheme.group(2)
    if rest.startswith("//"):
        authority, _, rest = rest[2:].partition("/")
        rest = "/" + rest if rest or source.endswith("/") else ""
        host = authority.rpartition("@")[2]
        if host != host.lower():
            return "its host is not lower-case"
    path = re.split(r"[?#]", rest, maxsplit=1)[0]
    segments = path.split("/")
    for i, segment in enumerate(segments):
        if segment in (".", ".."):
            return f"it holds a dot segment {segment!r}"
        if segment == "" and 0 < i < len(segments) - 1:
            return "it holds an empty path segment ('//')"
    return None

r"""The event schemas as jsonschema-rs is given them: to accept only what jsonschema accepts.

jsonschema reads ``pattern`` with Python's re module and ``date-time`` with
:mod:`sada.infra.contracts`' own check; jsonschema-rs with an ECMA-262 dialect
of Rust's regex and an RFC 3339 parser of its own. For the fast path never to
accept what jsonschema refuses, and without calling back into Python (about
1 µs a call), the schemas it is given are rewritten where those differ:

- \s and \S are Unicode classes whose members differ (Python's hold U+001C to
  U+001F and U+0085, ECMA-262's U+FEFF instead: a title of U+001C alone
  would pass the Rust engine); they are spelled out as Python has them. A
  pattern with \d, \w or \b, or with \s or \S inside brackets, is matched by
  Python's re through a keyword of Sada's own.
- The schemas end patterns in ``$(?!\n)``, so that Python's ``$`` cannot match
  before a final newline. To the Rust engine ``$`` is the end of the text
  already and the look-ahead changes nothing, but any look-around sends a
  pattern to a backtracking matcher: about twice the time per event. It is
  dropped.
- ``date-time`` is jsonschema-rs's own, and a date-time must also have the
  shape :data:`FAST_DATE_TIME`, within which the two parsers agree (checked
  over every calendar field at its bounds): no leap second, no lower-case t or
  z, and no year at the edge of Python's calendar, where an instant cannot be
  converted to UTC. Any other date-time goes to the slow path.

The other formats the schemas name (uri, uri-reference) jsonschema-rs checks
more strictly than jsonschema does without its optional format libraries;
what it refuses there goes to the slow path too, which decides.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sada.pipeline.domain.errors import SadaError
from sada.pipeline.domain.tracking import is_valid_tracking_code

if TYPE_CHECKING:
    from jsonschema_rs import KeywordValidator

PYTHON_PATTERN = "sadaPythonPattern"
PYTHON_SPACES = (  # what \s matches to re; a test checks it against every code point
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_SPELLED = {"s": f"[{PYTHON_SPACES}]", "S": f"[^{PYTHON_SPACES}]"}
_ENGINE_DEPENDENT = frozenset("dDwWbB")
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_PLAIN_END = "$(?!\\n)"
FAST_DATE_TIME = (
    r"^[1-8][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
FORMATS = {"sada-tracking-code": is_valid_tracking_code}
# Keywords whose values are schemas, lists of schemas, or maps of names to schemas.
_SUBSCHEMA = frozenset(
    {"items", "additionalProperties", "not", "if", "then", "else", "contains"}
    | {"propertyNames", "unevaluatedItems", "unevaluatedProperties", "contentSchema"}
)
_SUBSCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SUBSCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "dependentSchemas"})


def for_rust(schema: Any) -> Any:
    """``schema`` rewritten for jsonschema-rs to accept only what jsonschema accepts."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "pattern" and isinstance(value, str):
            spelled = _rust_regex(value)
            if spelled is None:
                out[PYTHON_PATTERN] = value
                continue
            value = spelled
        elif key in _SUBSCHEMA:
            value = for_rust(value)
        elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
            value = [for_rust(sub) for sub in value]
        elif key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            names = _name_regex if key == "patternProperties" else str
            value = {names(name): for_rust(sub) for name, sub in value.items()}
        out[key] = value
    if schema.get("format") == "date-time":
        out["allOf"] = [*out.get("allOf", []), {"pattern": FAST_DATE_TIME}]
    return out


def _rust_regex(pattern: str) -> str | None:
    """``pattern`` for jsonschema-rs, to match what it matches to re; None if it cannot be."""
    escaped = {m[1] for m in _ESCAPE.finditer(pattern)}
    if escaped & _ENGINE_DEPENDENT or (escaped & set(_SPELLED) and "[" in pattern):
        return None
    spelled = _ESCAPE.sub(lambda m: _SPELLED.get(m[1], m[0]), pattern)
    head = spelled.removesuffix(_PLAIN_END)
    escapes = len(head) - len(head.rstrip("\\"))
    return head + "$" if head != spelled and escapes % 2 == 0 else spelled


def _name_regex(pattern: str) -> str:
    """A patternProperties regex for jsonschema-rs; no keyword of Sada's can stand in for one."""
    spelled = _rust_regex(pattern)
    if spelled is None:
        raise SadaError(
            f"patternProperties {pattern!r}: spell its classes out, "
            "\\d \\w \\b mean different things to different engines"
        )
    return spelled


class PythonPattern:
    """The ``pattern`` keyword as Python's re reads it, for jsonschema-rs to call."""

    def __init__(
        self, parent_schema: dict[str, Any], value: str, schema_path: list[str | int]
    ) -> None:
        self._search = re.compile(value).search

    def validate(self, instance: object) -> None:
        if isinstance(instance, str) and self._search(instance) is None:
            raise ValueError("does not match")


# What the validators are built with, besides the rewritten schemas.
KEYWORDS: dict[str, type[KeywordValidator]] = {PYTHON_PATTERN: PythonPattern}

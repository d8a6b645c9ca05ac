"""Sada's event contracts applied: decode a message value, validate it as a Sada event.

The JSON Schemas shipped in :mod:`sada.schemas` are the contract; this module
reads them once per process (on first use), checks them, resolves their
``$ref`` s through a :class:`referencing.Registry` once, and keeps one compiled
validator per schema, so validating an event re-reads and re-resolves nothing.

Each schema is also compiled into a plain predicate that accepts a valid
instance several times faster than a general validator walks the schema. The
predicate only ever answers "valid" early: whenever it says no, the
:mod:`jsonschema` validator decides and names the error, so the JSON Schema
semantics stay those of :mod:`jsonschema`.

A rejected event raises :class:`~sada.errors.EventRejectedError` whose
``reason`` is a :class:`~sada.reasons.Reason` and whose ``detail`` names the
JSON path at fault, e.g. ``data.body: 'x…' is too long``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from types import MappingProxyType
from typing import Any

import orjson
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from sada.errors import EventRejectedError, SadaError
from sada.reasons import Reason
from sada.tracking import is_valid_tracking_code

TOPIC_OF_TYPE: Mapping[str, str] = MappingProxyType(
    {
        "sada.submission.created": "sada.submissions",
        "sada.submission.withdrawn": "sada.submissions",
        "sada.vote.cast": "sada.votes",
        "sada.vote.retracted": "sada.votes",
        "sada.response.posted": "sada.responses",
        "sada.satisfaction.rated": "sada.responses",
        "sada.submission.escalated": "sada.escalations",
    }
)
EVENT_TYPES: frozenset[str] = frozenset(TOPIC_OF_TYPE)

MAX_EVENT_BYTES = 65536
ENVELOPE_SCHEMA_ID = "https://sada.example/schemas/cloudevent/v1.json"

_SCHEMA_PACKAGE = "sada.schemas"
_DATA_SCHEMA_FILE = re.compile(r"^(?P<type>.+)\.v(?P<version>[1-9][0-9]*)\.json$")
_BOM = b"\xef\xbb\xbf"
_ANNOTATIONS = frozenset({"title", "description", "$comment", "examples", "default"})
# Values of these keywords are data, not subschemas: never look for $ref in them.
_LITERAL_KEYWORDS = frozenset({"const", "enum", "examples", "default"})
_SHOWN_CHARS = 80
_MAX_DETAIL = 300

_Predicate = Callable[[Any], bool]


@dataclass(frozen=True)
class _Schema:
    validator: Any  # a Draft202012Validator
    accepts: _Predicate

    def first_error(self, instance: object) -> ValidationError | None:
        if self.accepts(instance):
            return None
        return best_match(self.validator.iter_errors(instance))


@dataclass(frozen=True)
class _DataContract:
    type: str
    version: int
    schema_id: str
    schema: _Schema


@dataclass(frozen=True)
class _Contracts:
    envelope: _Schema
    by_id: Mapping[str, _DataContract]
    current: Mapping[str, _DataContract]  # type -> its newest version


def decode(raw: bytes, max_bytes: int = MAX_EVENT_BYTES) -> dict[str, Any]:
    """Parse one message value into a JSON object.

    Raises :class:`EventRejectedError` with reason ``too_large`` above
    ``max_bytes``, ``invalid_json`` if it is not UTF-8 JSON, and
    ``invalid_envelope`` if it is JSON but not an object. A UTF-8 byte order
    mark is tolerated.
    """
    if len(raw) > max_bytes:
        raise EventRejectedError(
            Reason.TOO_LARGE, f"event: {len(raw)} bytes, more than the limit of {max_bytes}"
        )
    try:
        value = orjson.loads(raw.removeprefix(_BOM))
    except orjson.JSONDecodeError as e:
        raise EventRejectedError(Reason.INVALID_JSON, f"event: {e}") from e
    if not isinstance(value, dict):
        raise EventRejectedError(
            Reason.INVALID_ENVELOPE,
            f"event: a JSON {type(value).__name__} is not a CloudEvent, expected an object",
        )
    return value


def validate_event(event: object) -> None:
    """Check ``event`` (a decoded message value) against the Sada contract.

    Checks, in order: a JSON object with a known ``type`` (else
    ``unknown_type``); the CloudEvents envelope, including that
    ``dataschema``, if given, is a schema of that type (else
    ``invalid_envelope``); ``data`` against the type's schema (else
    ``schema_violation``, or ``invalid_tracking_code`` when the tracking code
    is at fault); ``subject`` equal to ``data.submission_id`` (else
    ``subject_mismatch``). Returns None when all hold.
    """
    contracts = _contracts()
    if not isinstance(event, dict):
        raise EventRejectedError(Reason.INVALID_ENVELOPE, "event: not a JSON object")
    type_ = event.get("type")
    if isinstance(type_, str) and type_ not in EVENT_TYPES:
        raise EventRejectedError(
            Reason.UNKNOWN_TYPE, f"type: {_abbreviate(type_)} is not a Sada event type"
        )
    error = contracts.envelope.first_error(event)
    if error is not None:
        raise EventRejectedError(Reason.INVALID_ENVELOPE, _describe(error))

    contract = _contract_for(contracts, event["type"], event.get("dataschema"))
    data = event["data"]
    error = contract.schema.first_error(data)
    if error is not None:
        at_code = tuple(error.absolute_path) == ("tracking_code",)
        reason = Reason.INVALID_TRACKING_CODE if at_code else Reason.SCHEMA_VIOLATION
        raise EventRejectedError(reason, _describe(error, "data"))

    if event["subject"] != data["submission_id"]:
        raise EventRejectedError(
            Reason.SUBJECT_MISMATCH,
            f"subject: {event['subject']!r} is not data.submission_id {data['submission_id']!r}",
        )


def schema_id(type_: str) -> str:
    """Return the ``$id`` of the current data schema of ``type_`` (its ``dataschema`` value).

    Raises :class:`EventRejectedError` (``unknown_type``) for a type Sada
    does not know.
    """
    contract = _contracts().current.get(type_)
    if contract is None:
        raise EventRejectedError(
            Reason.UNKNOWN_TYPE, f"type: {_abbreviate(type_)} is not a Sada event type"
        )
    return contract.schema_id


def _contract_for(contracts: _Contracts, type_: str, dataschema: object) -> _DataContract:
    current = contracts.current[type_]
    if dataschema is None:
        return current
    contract = contracts.by_id.get(dataschema) if isinstance(dataschema, str) else None
    if contract is None or contract.type != type_:
        raise EventRejectedError(
            Reason.INVALID_ENVELOPE,
            f"dataschema: {_abbreviate(dataschema)} is not a schema of {type_}, "
            f"expected {current.schema_id!r}",
        )
    return contract


def _describe(error: ValidationError, *root: str) -> str:
    """``<JSON path>: <what is wrong>``, the path from the event's top (``event`` for the top)."""
    path = ""
    for part in (*root, *error.absolute_path):
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    message = error.message
    instance = error.instance
    if isinstance(instance, str | list | dict):
        full = repr(instance)
        if len(full) > _SHOWN_CHARS + 2:
            message = message.replace(full, _abbreviate(instance))
    detail = f"{path or 'event'}: {message}"
    return detail if len(detail) <= _MAX_DETAIL else detail[: _MAX_DETAIL - 1] + "…"


def _abbreviate(value: object) -> str:
    """``repr(value)``, cut short so that an oversized value cannot flood a log or header."""
    if isinstance(value, str) and len(value) > _SHOWN_CHARS:
        shown = repr(value[:_SHOWN_CHARS])
        return shown[:-1] + "…" + shown[-1]
    if isinstance(value, dict) and value:
        return "{…}"
    if isinstance(value, list) and value:
        return "[…]"
    return repr(value)


# -- loading, once per process -------------------------------------------------


@functools.cache
def _contracts() -> _Contracts:
    documents = _read_schemas()
    registry: Registry[Any] = Registry().with_resources(
        (doc["$id"], DRAFT202012.create_resource(doc)) for doc in documents.values()
    )
    checker = _format_checker()

    def compile_(doc: dict[str, Any]) -> _Schema:
        resolved = _inline_refs(doc, registry.resolver(base_uri=doc["$id"]), depth=0)
        validator = Draft202012Validator(resolved, registry=registry, format_checker=checker)
        try:
            accepts = _predicate(resolved, checker)
        except _UnsupportedKeyword:
            accepts = _never
        return _Schema(validator, accepts)

    envelope: dict[str, Any] | None = None
    by_id: dict[str, _DataContract] = {}
    current: dict[str, _DataContract] = {}
    for name, doc in sorted(documents.items()):
        if doc["$id"] == ENVELOPE_SCHEMA_ID:
            envelope = doc
            continue
        match = _DATA_SCHEMA_FILE.match(name)
        if match is None or match["type"] not in EVENT_TYPES:
            continue  # shared definitions, reached through $ref
        type_, version = match["type"], int(match["version"])
        expected_id = f"https://sada.example/schemas/{type_}/v{version}.json"
        if doc["$id"] != expected_id:
            raise SadaError(f"schema {name}: $id is {doc['$id']!r}, expected {expected_id!r}")
        contract = _DataContract(type_, version, expected_id, compile_(doc))
        by_id[expected_id] = contract
        if type_ not in current or current[type_].version < version:
            current[type_] = contract

    if envelope is None:
        raise SadaError(f"no envelope schema {ENVELOPE_SCHEMA_ID} in {_SCHEMA_PACKAGE}")
    if set(envelope["properties"]["type"]["enum"]) != EVENT_TYPES:
        raise SadaError("the envelope schema's type enum disagrees with sada.contracts.EVENT_TYPES")
    missing = EVENT_TYPES - set(current)
    if missing:
        raise SadaError(f"no data schema for {', '.join(sorted(missing))} in {_SCHEMA_PACKAGE}")
    return _Contracts(compile_(envelope), MappingProxyType(by_id), MappingProxyType(current))


def _read_schemas() -> dict[str, dict[str, Any]]:
    documents: dict[str, dict[str, Any]] = {}
    for entry in resources.files(_SCHEMA_PACKAGE).iterdir():
        if not (entry.is_file() and entry.name.endswith(".json")):
            continue
        doc = json.loads(entry.read_text(encoding="utf-8"))
        try:
            Draft202012Validator.check_schema(doc)
        except SchemaError as e:
            raise SadaError(f"schema {entry.name} is not valid JSON Schema: {e.message}") from e
        documents[entry.name] = doc
    return documents


def _inline_refs(node: Any, resolver: Any, depth: int) -> Any:
    """Return ``node`` with every ``$ref`` replaced by the schema it points to.

    Done once at load time so that validation never resolves a reference.
    Sada's schemas are not recursive; a reference chain deeper than 32 is
    taken for a cycle.
    """
    if isinstance(node, list):
        return [_inline_refs(item, resolver, depth) for item in node]
    if not isinstance(node, dict):
        return node
    inlined = {
        key: value if key in _LITERAL_KEYWORDS else _inline_refs(value, resolver, depth)
        for key, value in node.items()
        if key != "$ref"
    }
    if "$ref" not in node:
        return inlined
    if depth > 32:
        raise SadaError(f"schema reference {node['$ref']!r} nests too deeply (a cycle?)")
    try:
        target = resolver.lookup(node["$ref"])
    except Unresolvable as e:
        raise SadaError(f"schema reference {node['$ref']!r} does not resolve") from e
    referenced = _inline_refs(target.contents, target.resolver, depth + 1)
    if isinstance(referenced, dict):
        referenced = {k: v for k, v in referenced.items() if k not in ("$id", "$schema")}
        if set(inlined) <= _ANNOTATIONS:
            return {**referenced, **inlined}
    return {"allOf": [referenced], **inlined}


def _format_checker() -> FormatChecker:
    checker = FormatChecker()
    checker.checks("sada-tracking-code")(_is_tracking_code)
    # Registered here so that calendar validity is checked whether or not an
    # optional RFC 3339 library is installed; the schemas' patterns fix the
    # RFC 3339 shape itself.
    checker.checks("date-time")(_is_date_time)
    return checker


def _is_tracking_code(value: object) -> bool:
    return not isinstance(value, str) or is_valid_tracking_code(value)


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        # An instant at the very edge of the calendar can be written in RFC 3339
        # but not converted to UTC, which every consumer does first.
        datetime.fromisoformat(value).astimezone(UTC)
    except (ValueError, OverflowError):
        return False
    return True


# -- the fast acceptor ------------------------------------------------------------
#
# A general validator re-creates a validator object for every subschema it
# enters; a predicate built once from the (ref-free) schema does not. Only the
# keywords Sada's schemas use are compiled; a schema with any other keyword
# gets no predicate and is always checked by jsonschema. The loops below are
# spelled out because all() over a generator costs a third of the throughput.


class _UnsupportedKeyword(Exception):
    pass


_IGNORED = _ANNOTATIONS | {"$schema", "$id", "$defs", "$anchor", "then", "else"}


def _never(_: object) -> bool:
    return False


def _always(_: object) -> bool:
    return True


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _is_integer(x: object) -> bool:
    # JSON Schema counts 5.0 as an integer, as jsonschema does.
    if isinstance(x, bool):
        return False
    return isinstance(x, int) or (isinstance(x, float) and x.is_integer())


_TYPES: Mapping[str, _Predicate] = {
    "string": lambda x: isinstance(x, str),
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
    "number": _is_number,
    "integer": _is_integer,
}


def _all_of(checks: list[_Predicate]) -> _Predicate:
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]

    def check(x: object) -> bool:
        for c in checks:  # noqa: SIM110
            if not c(x):
                return False
        return True

    return check


def _predicate(schema: Any, formats: FormatChecker) -> _Predicate:
    if schema is True:
        return _always
    if schema is False:
        return _never
    if not isinstance(schema, dict):
        raise _UnsupportedKeyword(repr(schema))
    checks: list[_Predicate] = []
    for key, value in schema.items():
        if key in _IGNORED:
            continue
        compile_keyword = _KEYWORDS.get(key)
        if compile_keyword is None:
            raise _UnsupportedKeyword(key)
        checks.append(compile_keyword(value, schema, formats))
    return _all_of(checks)


def _type(value: Any, schema: Any, formats: FormatChecker) -> _Predicate:
    names = [value] if isinstance(value, str) else list(value)
    tests = [_TYPES[name] for name in names]
    return lambda x: any(t(x) for t in tests)


def _strings_only(values: list[Any]) -> frozenset[str]:
    if not all(isinstance(v, str) for v in values):
        raise _UnsupportedKeyword("non-string const/enum")
    return frozenset(values)


def _enum(value: Any, schema: Any, formats: FormatChecker) -> _Predicate:
    allowed = _strings_only(value)
    return lambda x: isinstance(x, str) and x in allowed


def _const(value: Any, schema: Any, formats: FormatChecker) -> _Predicate:
    return _enum([value], schema, formats)


def _required(value: Any, schema: Any, formats: FormatChecker) -> _Predicate:
    names = tuple(value)
    return lambda x: not isinstance(x, dict) or all(name in x for name in names)


def _properties(value: Any, schema: Any, formats: FormatChecker) -> _Predicate:
    checks = tuple((name, _predicate(sub, formats)) for name, sub in value.items())

    def check(x: object) -> bool:
        if not isinstance(x, dict):
            return True
        for name, c in checks:  # noqa: SIM110
            if name in x and not c(x[name]):
                return False
        return True

    return check


def _pattern_properties(value: Any, schema: Any, formats: FormatChecker) -> _Predicate:
    checks = tuple((re.compile(p), _predicate(sub, formats)) for p, sub in value.items())

    def check(x: object) -> bool:
        if not isinstance(x, dict):
            return True
        for name, item in x.items():
            for pattern, c in checks:
                if pattern.search(name) and not c(item):
                    return False
        return True

    return check


def _additional_properties(value: Any, schema: Any, formats: FormatChecker) -> _Predicate:
    known = frozenset(schema.get("properties", ()))
    patterns = tuple(re.compile(p) for p in schema.get("patternProperties", ()))
    c = _predicate(value, formats)

    def check(x: object) -> bool:
        if not isinstance(x, dict):
            return True
        for name, item in x.items():
            if name in known or any(p.search(name) for p in patterns):
                continue
            if not c(item):
                return False
        return True

    return check


def _pattern(value: Any, schema: Any, formats: FormatChecker) -> _Predicate:
    search = re.compile(value).search
    return lambda x: not isinstance(x, str) or search(x) is not None


def _min_length(value: Any, schema: Any, formats: FormatChecker) -> _Predicate:
    return lambda x: not isinstance(x, str) or len(x) >= value


def _max_length(value: Any, schema: Any, formats: FormatChecker) -> _Predicate:
    return lambda x: not isinstance(x, str) or len(x) <= value


def _minimum(value: Any, schema: Any, formats: FormatChecker) -> _Predicate:
    return lambda x: not _is_number(x) or x >= value


def _maximum(value: Any, schema: Any, formats: FormatChecker) -> _Predicate:
    return lambda x: not _is_number(x) or x <= value


def _format(value: Any, schema: Any, formats: FormatChecker) -> _Predicate:
    return lambda x: bool(formats.conforms(x, value))


def _if(value: Any, schema: Any, formats: FormatChecker) -> _Predicate:
    condition = _predicate(value, formats)
    then = _predicate(schema.get("then", True), formats)
    otherwise = _predicate(schema.get("else", True), formats)
    return lambda x: then(x) if condition(x) else otherwise(x)


def _dependent_schemas(value: Any, schema: Any, formats: FormatChecker) -> _Predicate:
    checks = tuple((name, _predicate(sub, formats)) for name, sub in value.items())

    def check(x: object) -> bool:
        if not isinstance(x, dict):
            return True
        for name, c in checks:  # noqa: SIM110
            if name in x and not c(x):
                return False
        return True

    return check


def _all_of_keyword(value: Any, schema: Any, formats: FormatChecker) -> _Predicate:
    return _all_of([_predicate(sub, formats) for sub in value])


_KEYWORDS: Mapping[str, Callable[[Any, Any, FormatChecker], _Predicate]] = {
    "type": _type,
    "enum": _enum,
    "const": _const,
    "required": _required,
    "properties": _properties,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "pattern": _pattern,
    "minLength": _min_length,
    "maxLength": _max_length,
    "minimum": _minimum,
    "maximum": _maximum,
    "format": _format,
    "if": _if,
    "allOf": _all_of_keyword,
    "dependentSchemas": _dependent_schemas,
}

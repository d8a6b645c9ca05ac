"""Sada's event contracts applied: decode a message value, validate it as a Sada event.

The JSON Schemas shipped in :mod:`sada.schemas` are the contract; this module
reads them once per process (on first use), checks them, resolves their
``$ref`` s through a :class:`referencing.Registry` once, and keeps one compiled
validator per schema, so validating an event re-reads and re-resolves nothing.

Each schema is also translated into the source of one plain Python function,
its acceptor, which accepts a valid instance several times faster than a
general validator walks the schema. The acceptor only ever answers "valid"
early: whenever it says no, the :mod:`jsonschema` validator decides and names
the error, so the JSON Schema semantics stay those of :mod:`jsonschema`.

A rejected event raises :class:`~sada.pipeline.domain.errors.EventRejectedError` whose
``reason`` is a :class:`~sada.pipeline.domain.reasons.Reason` and whose ``detail`` names the
JSON path at fault, e.g. ``data.body: 'x…' is too long``.
"""

from __future__ import annotations

import functools
import itertools
import json
import numbers
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

from sada.pipeline.domain.errors import EventRejectedError, SadaError
from sada.pipeline.domain.reasons import Reason
from sada.pipeline.domain.tracking import is_valid_tracking_code

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


@dataclass(frozen=True, slots=True)
class _Schema:
    validator: Any  # a Draft202012Validator
    accepts: _Predicate  # True only for a valid instance; False: ask first_error

    def first_error(self, instance: object) -> ValidationError | None:
        """The error :mod:`jsonschema` names in ``instance``, None if it is valid."""
        return best_match(self.validator.iter_errors(instance))


@dataclass(frozen=True, slots=True)
class _DataContract:
    type: str
    version: int
    schema_id: str
    schema: _Schema


@dataclass(frozen=True, slots=True)
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
    envelope = contracts.envelope
    if not envelope.accepts(event):
        error = envelope.first_error(event)
        if error is not None:
            raise EventRejectedError(Reason.INVALID_ENVELOPE, _describe(error))

    # The envelope holds: type_ is a Sada type, dataschema absent or a string.
    type_ = event["type"]
    contract = contracts.current[type_]
    dataschema = event.get("dataschema")
    if dataschema is not None and (type(dataschema) is not str or dataschema != contract.schema_id):
        contract = _contract_for(contracts, type_, dataschema)
    data = event["data"]
    schema = contract.schema
    if not schema.accepts(data):
        error = schema.first_error(data)
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
    remembered: _Remembered = {}

    def compile_(doc: dict[str, Any]) -> _Schema:
        resolved = _inline_refs(doc, registry.resolver(base_uri=doc["$id"]), depth=0)
        validator = Draft202012Validator(resolved, registry=registry, format_checker=checker)
        try:
            accepts = _acceptor(resolved, checker, doc["$id"], remembered)
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
        raise SadaError(
            "the envelope schema's type enum disagrees with sada.infra.contracts.EVENT_TYPES"
        )
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
# enters and dispatches every keyword through a table. Instead, each
# (ref-free) schema is translated once, at load time, into the source of one
# plain Python function: exact type tests, length bounds, precompiled regular
# expressions and set lookups, one after the other, with no call per keyword or
# property. Only the keywords Sada's schemas use are translated; a schema with
# any other keyword gets no acceptor and is always checked by jsonschema.
#
# The acceptor decides exactly for the values JSON decodes to (dict, list, str,
# int, float, bool, None). Anything else, a str subclass or a Decimal say, is
# left to jsonschema, because there the acceptor's exact type tests and
# jsonschema's isinstance tests could disagree.


class _UnsupportedKeyword(Exception):
    pass


_IGNORED = _ANNOTATIONS | {"$schema", "$id", "$defs", "$anchor", "then", "else"}
_TRANSLATED = frozenset(
    {"type", "enum", "const", "format", "if", "allOf"}
    | {"minLength", "maxLength", "pattern", "minimum", "maximum"}
    | {"required", "properties", "patternProperties", "additionalProperties", "dependentSchemas"}
)

# What each JSON type is decoded to, and the test of exactly those Python types.
_PYTHON_TYPES: Mapping[str, frozenset[type]] = {
    "string": frozenset({str}),
    "object": frozenset({dict}),
    "array": frozenset({list}),
    "boolean": frozenset({bool}),
    "null": frozenset({type(None)}),
    # JSON Schema counts 5.0 as an integer, as jsonschema does.
    "integer": frozenset({int, float}),
    "number": frozenset({int, float}),
}
_TYPE_TESTS: Mapping[str, str] = {
    "string": "type({v}) is str",
    "object": "type({v}) is dict",
    "array": "type({v}) is list",
    "boolean": "{v} is True or {v} is False",
    "null": "{v} is None",
    "integer": "type({v}) is int or type({v}) is float and {v}.is_integer()",
    "number": "type({v}) is int or type({v}) is float",
}
_JSON_TYPES = frozenset({str, int, float, bool, type(None), dict, list})
_STRING = frozenset({str})
_NUMBER = frozenset({int, float})
_OBJECT = frozenset({dict})

_Known = frozenset[type] | None  # the Python types a value can have here; None: any
_Lines = list[str]


# Identifiers, sources and language tags recur from event to event (and subject
# is data.submission_id), and whether such a string matches its pattern and
# format depends on the string alone. So the strings found to match are
# remembered, one set per pattern and format, up to this many strings each
# (then all are forgotten at once). Free text and instants seldom recur:
# remembering them would cost more time than it saves, and memory.
_REMEMBERED = 4096
_Remembered = dict[tuple[Any, Any], set[str]]  # (format, pattern) -> strings that match


def _recurs(schema: Mapping[str, Any]) -> bool:
    """Whether a string schema describes a token likely to recur: bounded and anchored."""
    pattern = schema.get("pattern")
    return (
        isinstance(pattern, str) and pattern.startswith("^") and schema.get("maxLength", 501) <= 500
    )


def _indent(lines: _Lines) -> _Lines:
    return ["    " + line for line in lines]


@dataclass(frozen=True)
class _Outcomes:
    """The statements that end a generated function with each verdict."""

    valid: str
    invalid: str
    undecided: str  # the value is of a type whose verdict jsonschema must give
    subscript_rejects: bool  # a missing required member may be read: KeyError means no

    def reject(self, v: str) -> _Lines:
        """Reject a value that failed an exact type test: undecided unless of a JSON type."""
        if self.invalid == self.undecided:
            return [self.invalid]
        return [f"if type({v}) in _JSON_TYPES:", f"    {self.invalid}", self.undecided]


# The acceptor proper only says "valid" or "ask jsonschema"; the condition of an
# ``if`` must be decided both ways, so it gets a function of its own.
_ACCEPTOR = _Outcomes("return True", "return False", "return False", subscript_rejects=True)
_CONDITION = _Outcomes("return 1", "return 0", "return -1", subscript_rejects=False)


class _Translator:
    """Writes the source of one schema's acceptor and the values it refers to."""

    def __init__(self, formats: FormatChecker, remembered: _Remembered) -> None:
        self._formats = formats
        self._remembered = remembered
        self._bound: dict[str, Any] = {"_JSON_TYPES": _JSON_TYPES, "_Number": numbers.Number}
        self._bound_names: dict[tuple[str, Any], str] = {}
        self._functions: list[str] = []
        self._count = itertools.count()

    def acceptor(self, schema: Any, origin: str) -> _Predicate:
        self._function("accepts", schema, None, _ACCEPTOR)
        namespace = dict(self._bound)
        source = "\n\n".join(self._functions)
        exec(compile(source, f"<acceptor of {origin}>", "exec"), namespace)
        accepts: _Predicate = namespace["accepts"]
        return accepts

    def _function(self, name: str, schema: Any, known: _Known, outcomes: _Outcomes) -> None:
        body = self._schema(schema, "x", known, outcomes)
        if outcomes.subscript_rejects:
            # Whatever raised KeyError, jsonschema decides.
            body = [
                "try:",
                *_indent(body or ["pass"]),
                "except KeyError:",
                f"    {outcomes.invalid}",
            ]
        self._functions.append("\n".join([f"def {name}(x):", *_indent([*body, outcomes.valid])]))

    def _new(self, prefix: str) -> str:
        return f"{prefix}{next(self._count)}"

    def _bind(self, prefix: str, key: Any, value: Any) -> str:
        """The global name under which the generated code finds ``value``."""
        name = self._bound_names.get((prefix, key))
        if name is None:
            name = self._bound_names[prefix, key] = self._new(f"_{prefix}")
            self._bound[name] = value
        return name

    def _search(self, pattern: str) -> str:
        # re.search as jsonschema does it; compiled once here.
        return self._bind("search", pattern, re.compile(pattern).search)

    def _schema(self, schema: Any, v: str, known: _Known, outcomes: _Outcomes) -> _Lines:
        if schema is True:
            return []
        if schema is False:
            return [outcomes.invalid]
        if not isinstance(schema, dict):
            raise _UnsupportedKeyword(repr(schema))
        unsupported = set(schema) - _TRANSLATED - _IGNORED
        if unsupported:
            raise _UnsupportedKeyword(", ".join(sorted(unsupported)))
        out: _Lines = []
        if "type" in schema:
            names = schema["type"]
            names = [names] if isinstance(names, str) else list(names)
            if not names or any(name not in _TYPE_TESTS for name in names):
                raise _UnsupportedKeyword(f"type {names!r}")
            test = " or ".join(_TYPE_TESTS[name].format(v=v) for name in names)
            out += [f"if not ({test}):", *_indent(outcomes.reject(v))]
            allowed = frozenset[type]().union(*(_PYTHON_TYPES[name] for name in names))
            known = allowed if known is None else known & allowed
        if "enum" in schema:
            out += self._strings_in(v, schema["enum"], known, outcomes)
        if "const" in schema:
            out += self._strings_in(v, [schema["const"]], known, outcomes)
        out += self._strings(v, schema, known, outcomes)
        out += self._applicable(
            v, known, _NUMBER, "type({v}) is int or type({v}) is float",
            "type({v}) is not bool and isinstance({v}, _Number)", outcomes,
            self._number_keywords(v, schema, outcomes),
        )  # fmt: skip
        out += self._applicable(
            v, known, _OBJECT, "type({v}) is dict", "isinstance({v}, dict)", outcomes,
            self._object_keywords(v, schema, outcomes),
        )  # fmt: skip
        if "if" in schema:
            out += self._if(v, schema, known, outcomes)
        for sub in schema.get("allOf", ()):
            out += self._schema(sub, v, known, outcomes)
        return out

    def _applicable(
        self,
        v: str,
        known: _Known,
        types: frozenset[type],
        exact: str,
        loose: str,
        outcomes: _Outcomes,
        lines: _Lines,
    ) -> _Lines:
        """``lines`` where they apply: a keyword for other types than the value's passes."""
        if not lines or (known is not None and known <= types):
            return lines
        if known is not None and not known & types:
            return []
        out = [f"if {exact.format(v=v)}:", *_indent(lines)]
        if known is None:
            out += [f"elif {loose.format(v=v)}:", f"    {outcomes.undecided}"]
        return out

    def _strings_in(self, v: str, values: Any, known: _Known, outcomes: _Outcomes) -> _Lines:
        if not isinstance(values, list) or not all(isinstance(x, str) for x in values):
            raise _UnsupportedKeyword("const or enum of other values than strings")
        if known is not None and str not in known:
            return [outcomes.invalid]
        if len(values) == 1:
            test = f"{v} != {values[0]!r}"
        else:
            test = f"{v} not in {self._bind('set', frozenset(values), frozenset(values))}"
        if known == _STRING:
            return [f"if {test}:", f"    {outcomes.invalid}"]
        return [f"if type({v}) is not str or {test}:", *_indent(outcomes.reject(v))]

    def _format(self, v: str, name: Any, outcomes: _Outcomes) -> _Lines:
        checker = self._formats.checkers.get(name)
        if checker is None:
            return []  # a format jsonschema does not know passes
        # Called exactly as FormatChecker.check calls it, on a value of any type.
        func, raises = checker
        f = self._bind("format", name, func)
        if not raises:
            return [f"if not {f}({v}):", f"    {outcomes.invalid}"]
        ok = self._new("ok")
        return [
            "try:",
            f"    {ok} = {f}({v})",
            f"except {self._bind('raises', name, raises)}:",
            f"    {ok} = False",
            f"if not {ok}:",
            f"    {outcomes.invalid}",
        ]

    def _strings(
        self, v: str, schema: Mapping[str, Any], known: _Known, outcomes: _Outcomes
    ) -> _Lines:
        """format, and the keywords for strings."""
        formats = self._format(v, schema["format"], outcomes) if "format" in schema else []
        lengths: _Lines = []
        low, high = schema.get("minLength"), schema.get("maxLength")
        if low is not None and high is not None:
            lengths += [f"if not {low!r} <= len({v}) <= {high!r}:", f"    {outcomes.invalid}"]
        elif low is not None:
            lengths += [f"if len({v}) < {low!r}:", f"    {outcomes.invalid}"]
        elif high is not None:
            lengths += [f"if len({v}) > {high!r}:", f"    {outcomes.invalid}"]
        patterns: _Lines = []
        if "pattern" in schema:
            search = self._search(schema["pattern"])
            patterns += [f"if {search}({v}) is None:", f"    {outcomes.invalid}"]
        if known != _STRING:
            return formats + self._applicable(
                v, known, _STRING, "type({v}) is str", "isinstance({v}, str)", outcomes,
                lengths + patterns,
            )  # fmt: skip
        slow = formats + patterns
        if slow and _recurs(schema):
            checked = (schema.get("format"), schema.get("pattern"))
            valid = self._bind("valid", checked, self._remembered.setdefault(checked, set()))
            slow = [
                f"if {v} not in {valid}:",
                *_indent(slow),
                f"    if len({valid}) >= {_REMEMBERED}:",
                f"        {valid}.clear()",
                f"    {valid}.add({v})",
            ]
        return lengths + slow

    def _number_keywords(self, v: str, schema: Mapping[str, Any], outcomes: _Outcomes) -> _Lines:
        out: _Lines = []
        for keyword, failing in (("minimum", "<"), ("maximum", ">")):
            if keyword in schema:
                bound = schema[keyword]
                if type(bound) not in (int, float):
                    raise _UnsupportedKeyword(f"{keyword} {bound!r}")
                out += [f"if {v} {failing} {bound!r}:", f"    {outcomes.invalid}"]
        return out

    def _object_keywords(self, v: str, schema: Mapping[str, Any], outcomes: _Outcomes) -> _Lines:
        properties: Mapping[str, Any] = schema.get("properties", {})
        patterns: Mapping[str, Any] = schema.get("patternProperties", {})
        required = list(dict.fromkeys(schema.get("required", ())))
        # patternProperties apply to the named properties as well.
        members = {
            name: self._member(
                [sub, *(p_sub for p, p_sub in patterns.items() if re.search(p, name))], outcomes
            )
            for name, sub in properties.items()
        }
        others = self._other_members(v, schema, outcomes)
        out: _Lines = []
        unread = required
        if outcomes.subscript_rejects:
            # Reading a required member raises KeyError when it is missing.
            unread = [name for name in required if not members.get(name, ("", []))[1]]
        if len(unread) == 1:
            out += [f"if {unread[0]!r} not in {v}:", f"    {outcomes.invalid}"]
        elif unread:
            names = self._bind("set", frozenset(unread), frozenset(unread))
            out += [f"if not {v}.keys() >= {names}:", f"    {outcomes.invalid}"]
        # Once the required members are known to be there, counting the other
        # named members present tells whether there are any further ones.
        known_present = len(set(required) & set(properties))
        count = str(known_present)
        if others and len(properties) > known_present:
            count = self._new("n")
            out += [f"{count} = {known_present}"]
        for name, (item, body) in members.items():
            read = [f"{item} = {v}[{name!r}]"] if body else []
            if name in required:
                out += [*read, *body]
            elif body or not count.isdigit():
                tally = [] if count.isdigit() else [f"{count} += 1"]
                out += [f"if {name!r} in {v}:", *_indent([*tally, *read, *body])]
        if others:
            out += [f"if len({v}) != {count}:", *_indent(others)]
        for name, sub in schema.get("dependentSchemas", {}).items():
            body = self._schema(sub, v, _OBJECT, outcomes)
            if body:
                out += [f"if {name!r} in {v}:", *_indent(body)]
        return out

    def _member(self, subs: list[Any], outcomes: _Outcomes) -> tuple[str, _Lines]:
        """The name given to a member's value and the checks of that value."""
        item = self._new("v")
        return item, [line for sub in subs for line in self._schema(sub, item, None, outcomes)]

    def _other_members(self, v: str, schema: Mapping[str, Any], outcomes: _Outcomes) -> _Lines:
        """patternProperties and additionalProperties for the members not in properties."""
        patterns: Mapping[str, Any] = schema.get("patternProperties", {})
        additional = schema.get("additionalProperties", True)
        if not patterns and additional is False:
            return [outcomes.invalid]
        key, item = self._new("k"), self._new("v")
        loop: _Lines = []
        for pattern, sub in patterns.items():
            body = self._schema(sub, item, None, outcomes)
            if body:
                loop += [f"if {self._search(pattern)}({key}) is not None:", *_indent(body)]
        body = self._schema(additional, item, None, outcomes)
        if body and len(patterns) == 1 and loop:
            loop += ["else:", *_indent(body)]
        elif body and patterns:
            # Which members are additional is decided as jsonschema decides it:
            # one search for all the patterns joined.
            loop += [f"if {self._search('|'.join(patterns))}({key}) is None:", *_indent(body)]
        else:
            loop += body
        if not loop:
            return []
        named = frozenset(schema.get("properties", {}))
        names = self._bind("set", named, named)
        return [
            f"for {key} in {v}:",
            f"    if {key} in {names}:",
            "        continue",
            f"    if type({key}) is not str:",
            f"        {outcomes.undecided}",
            f"    {item} = {v}[{key}]",
            *_indent(loop),
        ]

    def _if(self, v: str, schema: Mapping[str, Any], known: _Known, outcomes: _Outcomes) -> _Lines:
        then = self._schema(schema.get("then", True), v, known, outcomes)
        otherwise = self._schema(schema.get("else", True), v, known, outcomes)
        if not then and not otherwise:
            return []
        condition = self._new("_if")
        self._function(condition, schema["if"], known, _CONDITION)
        holds = self._new("c")
        out = [f"{holds} = {condition}({v})", f"if {holds} < 0:", f"    {outcomes.undecided}"]
        if not otherwise:
            return [*out, f"if {holds}:", *_indent(then)]
        if not then:
            return [*out, f"if not {holds}:", *_indent(otherwise)]
        return [*out, f"if {holds}:", *_indent(then), "else:", *_indent(otherwise)]


def _acceptor(
    schema: Any, formats: FormatChecker, origin: str, remembered: _Remembered
) -> _Predicate:
    """The acceptor of ``schema``: True only for an instance jsonschema finds valid.

    ``origin`` names the schema in tracebacks; ``remembered`` holds the strings
    known to match a pattern and format, shared by the acceptors of one set of
    schemas. Raises :class:`_UnsupportedKeyword` if the schema uses a keyword
    that is not translated.
    """
    return _Translator(formats, remembered).acceptor(schema, origin)


def _never(_: object) -> bool:
    return False

"""Sada's event contracts applied: decode a message value, validate it as a Sada event.

The JSON Schemas shipped in :mod:`sada.schemas` are the contract. They are
read once per process (on first use), checked, and built into validators of
two libraries, neither of which re-reads or re-resolves anything per event:

- the fast path, :mod:`jsonschema_rs`: one validator per event type and
  version that checks the envelope and the data together, their ``$ref`` s
  resolved through its registry. It decides every event it accepts;
- the slow path, for an event the fast path refused: envelope and data are
  checked one after the other, and the one jsonschema-rs refuses is handed to
  :mod:`jsonschema`, the reference validator integrators are pointed to, to
  give the verdict and name what is wrong in its words (the ``detail`` that
  integrators, dead-letter readers and the tests know). So the fast path may
  be stricter than jsonschema, never looser: the schemas it is given are
  rewritten where the two libraries part (:mod:`sada.infra.rust_schemas`).

A rejected event raises :class:`~sada.pipeline.domain.errors.EventRejectedError` whose
``reason`` is a :class:`~sada.pipeline.domain.reasons.Reason` and whose ``detail`` names the
JSON path at fault, e.g. ``data.body: 'x…' is too long``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from types import MappingProxyType
from typing import Any

import jsonschema_rs
import orjson
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from sada.infra import rust_schemas
from sada.pipeline.domain import vocabulary
from sada.pipeline.domain.errors import EventRejectedError, SadaError
from sada.pipeline.domain.reasons import Reason
from sada.pipeline.domain.tracking import is_valid_tracking_code

TOPIC_OF_TYPE: Mapping[str, str] = MappingProxyType(
    {
        "sada.submission.created": "sada.submissions",
        "sada.submission.withdrawn": "sada.submissions",
        "sada.vote.cast": "sada.votes",
        "sada.vote.retracted": "sada.votes",
        "sada.submission.followed": "sada.votes",
        "sada.submission.unfollowed": "sada.votes",
        "sada.response.posted": "sada.responses",
        "sada.satisfaction.rated": "sada.responses",
        "sada.submission.escalated": "sada.escalations",
    }
)
EVENT_TYPES: frozenset[str] = frozenset(vocabulary.EVENT_TYPES)

MAX_EVENT_BYTES = 65536
ENVELOPE_SCHEMA_ID = "https://sada.example/schemas/cloudevent/v1.json"

_SCHEMA_PACKAGE = "sada.schemas"
_DRAFT = "https://json-schema.org/draft/2020-12/schema"
_DATA_SCHEMA_FILE = re.compile(r"^(?P<type>.+)\.v(?P<version>[1-9][0-9]*)\.json$")
_BOM = b"\xef\xbb\xbf"
_ANNOTATIONS = frozenset({"title", "description", "$comment", "examples", "default"})
# Values of these keywords are data, not subschemas: never look for $ref in them.
_LITERAL_KEYWORDS = frozenset({"const", "enum", "examples", "default"})
_SHOWN_CHARS = 80
_MAX_DETAIL = 300


@dataclass(frozen=True, slots=True)
class _Schema:
    """One schema, for the slow path: jsonschema-rs's check, then jsonschema's verdict."""

    fast: jsonschema_rs.Validator
    validator: Any  # a Draft202012Validator

    def first_error(self, instance: object) -> ValidationError | None:
        """The error :mod:`jsonschema` names in ``instance``, None if it is valid."""
        if _fast_accepts(self.fast, instance):
            return None
        return best_match(self.validator.iter_errors(instance))


@dataclass(frozen=True, slots=True)
class _DataContract:
    type: str
    version: int
    schema_id: str
    schema: _Schema  # of the data
    event: jsonschema_rs.Validator  # of a whole event, envelope and data: the fast path


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
    if isinstance(event, dict):
        # The fast path, inline: it is run for every event.
        type_ = event.get("type")
        contract = contracts.current.get(type_) if isinstance(type_, str) else None
        dataschema = event.get("dataschema")
        if contract is not None and dataschema is not None and dataschema != contract.schema_id:
            contract = _other_version(contracts, type_, dataschema)
        if (
            contract is not None
            and _fast_accepts(contract.event, event)
            and event["subject"] == event["data"]["submission_id"]
        ):
            return
    _validate_slowly(contracts, event)


def _fast_accepts(validator: jsonschema_rs.Validator, instance: object) -> bool:
    """True only for an instance valid against ``validator``'s schema; False: ask jsonschema."""
    try:
        return validator.is_valid(instance)
    except ValueError:
        # A value of a type JSON does not decode to (a str subclass, a string
        # with a lone surrogate): jsonschema gives the verdict.
        return False


def _other_version(
    contracts: _Contracts, type_: object, dataschema: object
) -> _DataContract | None:
    """The contract of ``type_`` whose schema is ``dataschema``; None if there is none."""
    other = contracts.by_id.get(dataschema) if isinstance(dataschema, str) else None
    return other if other is not None and other.type == type_ else None


def _validate_slowly(contracts: _Contracts, event: object) -> None:
    """:func:`validate_event` part by part, :mod:`jsonschema` naming the error it finds."""
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

    # The envelope holds: type_ is a Sada type, dataschema absent or a string.
    type_ = event["type"]
    contract = contracts.current[type_]
    dataschema = event.get("dataschema")
    if dataschema is not None and (type(dataschema) is not str or dataschema != contract.schema_id):
        contract = _contract_for(contracts, type_, dataschema)
    error = contract.schema.first_error(event["data"])
    if error is not None:
        at_code = tuple(error.absolute_path) == ("tracking_code",)
        reason = Reason.INVALID_TRACKING_CODE if at_code else Reason.SCHEMA_VIOLATION
        raise EventRejectedError(reason, _describe(error, "data"))
    _check_subject(event)


def _check_subject(event: dict[str, Any]) -> None:
    data = event["data"]
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
    fast_registry = jsonschema_rs.Registry(
        [(doc["$id"], rust_schemas.for_rust(doc)) for doc in documents.values()],
        retriever=_not_shipped,
    )

    def fast(schema: dict[str, Any], name: str) -> jsonschema_rs.Validator:
        try:
            return jsonschema_rs.Draft202012Validator(
                schema,
                registry=fast_registry,
                formats=rust_schemas.FORMATS,
                validate_formats=True,
                keywords=rust_schemas.KEYWORDS,
            )
        except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError) as e:
            raise SadaError(f"schema {name}: {e.message}") from e

    def schema(doc: dict[str, Any]) -> _Schema:
        # Inlined once here: resolving a $ref on every validation takes jsonschema
        # three times as long over an invalid event.
        resolved = _inline_refs(doc, registry.resolver(base_uri=doc["$id"]), depth=0)
        slow = Draft202012Validator(resolved, format_checker=checker)
        return _Schema(fast({"$ref": doc["$id"]}, doc["$id"]), slow)

    def contract(type_: str, version: int, schema_id: str, doc: dict[str, Any]) -> _DataContract:
        both = {
            "$schema": _DRAFT,
            "allOf": [{"$ref": ENVELOPE_SCHEMA_ID}, {"properties": {"data": {"$ref": schema_id}}}],
        }
        return _DataContract(type_, version, schema_id, schema(doc), fast(both, schema_id))

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
        by_id[expected_id] = contract(type_, version, expected_id, doc)
        if type_ not in current or current[type_].version < version:
            current[type_] = by_id[expected_id]

    if envelope is None:
        raise SadaError(f"no envelope schema {ENVELOPE_SCHEMA_ID} in {_SCHEMA_PACKAGE}")
    if set(TOPIC_OF_TYPE) != EVENT_TYPES:
        raise SadaError("sada.infra.contracts.TOPIC_OF_TYPE disagrees with the envelope's types")
    missing = EVENT_TYPES - set(current)
    if missing:
        raise SadaError(f"no data schema for {', '.join(sorted(missing))} in {_SCHEMA_PACKAGE}")
    envelope_schema = schema(envelope)
    return _Contracts(envelope_schema, MappingProxyType(by_id), MappingProxyType(current))


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


def _not_shipped(uri: str) -> Any:
    # Every schema Sada uses ships with it: nothing is ever fetched.
    raise SadaError(f"schema {uri} is not one of the schemas in {_SCHEMA_PACKAGE}")


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
        instant = datetime.fromisoformat(value)
        if instant.year in (1, 9999):
            # An instant at the very edge of the calendar can be written in
            # RFC 3339 but not converted to UTC, which every consumer does first.
            instant.astimezone(UTC)
    except (ValueError, OverflowError):
        return False
    return True

"""The Avro encoding of journal events.

One encoded event is::

    0x01 | CRC-64-AVRO fingerprint of the writer's Envelope schema (8 bytes) | Avro body

The body is schemaless Avro of an ``Envelope`` (``schemas/Envelope.avsc``): run id, seq and
timestamp, and the event's own record as a union branch. JSON-valued fields travel as compact
JSON text. The fingerprint names the writer schema, so the decoder resolves bytes written by an
older or newer schema to the current one, once that schema is registered with
:func:`register_writer_schema`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from io import BytesIO
from pathlib import Path
from typing import Any, cast, get_origin, get_type_hints

import msgspec
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import SchemaParseException, fingerprint, to_parsing_canonical_form

from stepflow_stream.core.events import EVENT_TYPES, ErrorInfo, Event
from stepflow_stream.core.jsonvalue import JSON
from stepflow_stream.errors import JournalError

__all__ = [
    "NAMESPACE",
    "SCHEMAS_DIR",
    "SCHEMA_FINGERPRINT",
    "current_schema",
    "decode_event",
    "earlier_schemas",
    "encode_event",
    "register_writer_schema",
]

NAMESPACE = "org.stepflow.stream.events"
SCHEMAS_DIR = Path(__file__).resolve().parents[1] / "schemas"
"""The ``.avsc`` files: one per record, named after it, plus ``Envelope.avsc``."""

_MAGIC = 0x01
_HEADER_SIZE = 9


def frame_header(schema_fingerprint: bytes) -> bytes:
    """The header of a framed record: the magic byte and the writer schema's fingerprint."""
    return bytes([_MAGIC]) + schema_fingerprint


_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


# JSON values ----------------------------------------------------------------------------------

_json_encoder = msgspec.json.Encoder()
_json_decoder = msgspec.json.Decoder()


def _encode_json_value(value: JSON) -> str:
    """Compact JSON text. msgspec writes ``1.0`` as a float and ``1`` as an int, and ints of any
    size; NaN and infinities, which JSON cannot spell, become ``null``."""
    return _json_encoder.encode(value).decode()


def _decode_json_value(text: str) -> JSON:
    return _json_decoder.decode(text)


# Schemas --------------------------------------------------------------------------------------


def _read_schema_file(directory: Path, name: str) -> Any:
    return json.loads((directory / f"{name}.avsc").read_text(encoding="utf-8"))


def _load_envelope_schema(directory: Path) -> dict[str, Any]:
    """The Envelope schema as one self-contained document, each named record inlined where it is
    first used, as Avro requires: this document is what the fingerprint covers."""
    defined: set[str] = set()

    def inline(schema: Any) -> Any:
        if isinstance(schema, list):
            return [inline(branch) for branch in schema]
        if isinstance(schema, dict):
            if schema["type"] == "record":
                defined.add(schema["name"])
                record_fields = [
                    {**field, "type": inline(field["type"])} for field in schema["fields"]
                ]
                return {**schema, "fields": record_fields}
            if schema["type"] == "array":
                return {**schema, "items": inline(schema["items"])}
            return schema
        name = schema.rpartition(".")[2]
        if schema in _PRIMITIVES or name in defined:
            return schema
        return inline(_read_schema_file(directory, name))

    envelope: dict[str, Any] = inline(_read_schema_file(directory, "Envelope"))
    return envelope


def _fingerprint(schema: dict[str, Any]) -> bytes:
    # fastavro gives the 8 bytes little-endian, as Avro's single-object encoding does.
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"))


_ENVELOPE_SCHEMA = _load_envelope_schema(SCHEMAS_DIR)
_READER_SCHEMA = parse_schema(copy.deepcopy(_ENVELOPE_SCHEMA))
SCHEMA_FINGERPRINT = _fingerprint(_ENVELOPE_SCHEMA)
"""The fingerprint of the current Envelope schema, which :func:`encode_event` writes."""
_HEADER = frame_header(SCHEMA_FINGERPRINT)

_writers: dict[bytes, tuple[Any, Any]] = {SCHEMA_FINGERPRINT: (_READER_SCHEMA, None)}
"""Fingerprint to (parsed writer schema, reader schema to resolve to, or None if the same)."""


def current_schema() -> dict[str, Any]:
    """A copy of the current Envelope schema, self-contained, as a JSON-like dict."""
    return copy.deepcopy(_ENVELOPE_SCHEMA)


def register_writer_schema(schema: dict[str, Any]) -> bytes:
    """Make events written with ``schema`` (a self-contained Envelope schema, older or newer than
    the current one) decodable, and return its fingerprint. Registering twice is harmless."""
    try:
        parsed = parse_schema(copy.deepcopy(schema))
        schema_fingerprint = _fingerprint(schema)
    except (SchemaParseException, ValueError, KeyError, TypeError) as exc:
        raise JournalError(f"not a valid Avro schema: {exc}") from exc
    name = parsed.get("name") if isinstance(parsed, dict) else None
    if name != f"{NAMESPACE}.Envelope":
        raise JournalError(f"a writer schema must be the record {NAMESPACE}.Envelope, not {name!r}")
    _writers.setdefault(schema_fingerprint, (parsed, _READER_SCHEMA))
    return schema_fingerprint


_ADDED_FIELDS: tuple[tuple[str, str], ...] = (
    ("StepStarted", "affinity"),
    ("RunCreated", "forked_from_step"),
    ("StepCompleted", "reused_from"),
)
"""Fields added to the records since the first Envelope schema, ``(record, field)``, oldest
first (fields are only ever appended, with a default). The schema before each addition is the
current one without the fields added since; every such schema is registered below, so journals
written before an addition stay readable without anybody registering anything."""


def _without_fields(schema: Any, dropped: frozenset[tuple[str, str]]) -> Any:
    """``schema`` without the ``(record, field)`` pairs of ``dropped``."""
    if isinstance(schema, list):
        return [_without_fields(branch, dropped) for branch in schema]
    if isinstance(schema, dict) and schema["type"] == "record":
        kept = [
            {**field, "type": _without_fields(field["type"], dropped)}
            for field in schema["fields"]
            if (schema["name"], field["name"]) not in dropped
        ]
        return {**schema, "fields": kept}
    if isinstance(schema, dict) and schema["type"] == "array":
        return {**schema, "items": _without_fields(schema["items"], dropped)}
    return schema


def _schemas_before(
    schema: dict[str, Any], additions: Sequence[Iterable[tuple[str, str]]]
) -> list[dict[str, Any]]:
    """``schema`` as it was before each of ``additions`` (the ``(record, field)`` pairs one
    schema version added, oldest first): the commands' schema evolves the same way."""
    return [
        _without_fields(schema, frozenset(field for added in additions[since:] for field in added))
        for since in range(len(additions))
    ]


def earlier_schemas() -> list[dict[str, Any]]:
    """The Envelope schemas before each field addition, oldest first."""
    return _schemas_before(current_schema(), [(field,) for field in _ADDED_FIELDS])


for _schema in earlier_schemas():
    register_writer_schema(_schema)


# Records --------------------------------------------------------------------------------------

_Convert = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class _RecordCodec:
    """How a dataclass maps to its Avro record: its fields, and the few that need converting."""

    cls: type[Any]
    fields: tuple[str, ...]
    to_avro: tuple[tuple[str, _Convert], ...]
    from_avro: tuple[tuple[str, _Convert], ...]

    def to_record(self, value: Any) -> dict[str, Any]:
        record = {name: getattr(value, name) for name in self.fields}
        for name, convert in self.to_avro:
            record[name] = convert(record[name])
        return record

    def from_record(self, record: dict[str, Any], *leading: Any) -> Any:
        """The dataclass of ``record``; ``leading`` fills the fields the record does not hold."""
        for name, convert in self.from_avro:
            record[name] = convert(record[name])
        return self.cls(*leading, **record)


def _record_codec(cls: type[Any], skip: tuple[str, ...] = ()) -> _RecordCodec:
    """Derives the conversions from the dataclass's field types, so the events module stays the
    one place that says which fields hold JSON."""
    hints = get_type_hints(cls)
    names = tuple(field.name for field in fields(cls) if field.name not in skip)
    to_avro: list[tuple[str, _Convert]] = []
    from_avro: list[tuple[str, _Convert]] = []
    for name in names:
        hint = hints[name]
        if hint is Any or get_origin(hint) in (dict, list):
            to_avro.append((name, _encode_json_value))
            from_avro.append((name, _decode_json_value))
        elif hint is ErrorInfo:
            to_avro.append((name, _ERROR_INFO.to_record))
            from_avro.append((name, _ERROR_INFO.from_record))
        elif get_origin(hint) is tuple:
            # Avro writes any sequence as an array but reads it back as a list.
            from_avro.append((name, tuple))
    return _RecordCodec(cls, names, tuple(to_avro), tuple(from_avro))


_ERROR_INFO = _record_codec(ErrorInfo)
_ENVELOPE_FIELDS = ("run_id", "seq", "timestamp")
_BY_CLASS: dict[type[Event], tuple[str, _RecordCodec]] = {
    cls: (f"{NAMESPACE}.{cls.__name__}", _record_codec(cls, skip=_ENVELOPE_FIELDS))
    for cls in EVENT_TYPES
}
_BY_NAME: dict[str, _RecordCodec] = dict(_BY_CLASS.values())


# Events ---------------------------------------------------------------------------------------


def write_framed(header: bytes, schema: Any, record: dict[str, Any]) -> bytes:
    """``header`` followed by the schemaless Avro of ``record``; fastavro's errors pass up."""
    out = BytesIO()
    out.write(header)
    schemaless_writer(out, schema, record)
    return out.getvalue()


def read_header(data: bytes, what: str) -> bytes:
    """The writer schema fingerprint of a framed record; JournalError if it has no header."""
    if len(data) < _HEADER_SIZE:
        raise JournalError(
            f"not an encoded {what}: {len(data)} bytes, shorter than the {_HEADER_SIZE}-byte "
            "header"
        )
    if data[0] != _MAGIC:
        raise JournalError(f"not an encoded {what}: magic byte 0x{data[0]:02x}, expected 0x01")
    return bytes(data[1:_HEADER_SIZE])


def read_framed(
    data: bytes, writer: Any, reader: Any, *, what: str, body_error: str, **options: Any
) -> dict[str, Any]:
    """The record after the header, read with ``writer`` resolved to ``reader`` (None: the
    same); a truncated or over-long body is a JournalError starting with ``body_error``."""
    body = BytesIO(data)
    body.seek(_HEADER_SIZE)
    try:
        record = cast(
            dict[str, Any],
            schemaless_reader(body, writer, reader, return_record_name=True, **options),
        )
    except (EOFError, IndexError, ValueError, OverflowError) as exc:
        raise JournalError(f"{body_error}: {exc!r}") from exc
    if body.tell() != len(data):
        raise JournalError(f"malformed {what}: {len(data) - body.tell()} bytes after the body")
    return record


def encode_event(event: Event) -> bytes:
    """The bytes of ``event``: magic byte, schema fingerprint, Avro body."""
    entry = _BY_CLASS.get(type(event))
    if entry is None:
        raise JournalError(f"no Avro record for event type {type(event).__name__}")
    name, codec = entry
    try:
        envelope = {
            "run_id": event.run_id,
            "seq": event.seq,
            "timestamp": event.timestamp,
            "payload": (name, codec.to_record(event)),
        }
        return write_framed(_HEADER, _READER_SCHEMA, envelope)
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
        raise JournalError(
            f"cannot encode {type(event).__name__} seq {event.seq} of run {event.run_id!r}: {exc}"
        ) from exc


def decode_event(data: bytes) -> Event:
    """The event in ``data``, resolved from its writer's schema to the current one."""
    schema_fingerprint = read_header(data, "event")
    schemas = _writers.get(schema_fingerprint)
    if schemas is None:
        raise JournalError(
            f"unknown writer schema fingerprint {schema_fingerprint.hex()}: "
            "register the schema with register_writer_schema()"
        )
    writer_schema, reader_schema = schemas
    try:
        envelope = read_framed(
            data, writer_schema, reader_schema, what="event",
            body_error=f"malformed event body for writer schema {schema_fingerprint.hex()}",
        )
    except SchemaResolutionError as exc:
        # fastavro's message prints both schemas whole; the cause keeps it for who needs it.
        raise JournalError(
            f"an event of writer schema {schema_fingerprint.hex()} cannot be resolved to the "
            "current schema: a record it holds is unknown, or a field it lacks has no default"
        ) from exc
    name, payload = envelope["payload"]
    try:
        event: Event = _BY_NAME[name].from_record(
            payload, envelope["run_id"], envelope["seq"], envelope["timestamp"]
        )
    except msgspec.DecodeError as exc:
        raise JournalError(f"malformed event: a JSON field of {name} is not JSON: {exc}") from exc
    return event

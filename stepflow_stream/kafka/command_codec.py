"""The Avro encoding of commands, as they travel on the commands topic.

One encoded command is::

    0x01 | CRC-64-AVRO fingerprint of the commands Envelope schema (8 bytes) | Avro body

the same framing as events (:mod:`stepflow_stream.journal.codec`), with the command ``Envelope``
of ``schemas/commands/``: the run id, and the command's own record as a union branch. A
TaskResult's error is the events' ``ErrorInfo`` record, which the envelope takes from
``schemas/``.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, cast

import msgspec
from fastavro import parse_schema
from fastavro.read import SchemaResolutionError

from stepflow_stream.core.events import CancelRun, Command, ErrorInfo, SubmitRun, TaskResult
from stepflow_stream.errors import JournalError
from stepflow_stream.journal.codec import (
    _ERROR_INFO,
    _PRIMITIVES,
    SCHEMAS_DIR,
    _fingerprint,
    _read_schema_file,
    _record_codec,
    _RecordCodec,
    _schemas_before,
    frame_header,
    read_framed,
    read_header,
    write_framed,
)

__all__ = [
    "COMMAND_NAMESPACE",
    "COMMAND_SCHEMAS_DIR",
    "COMMAND_SCHEMA_FINGERPRINT",
    "command_schema",
    "decode_command",
    "earlier_command_schemas",
    "encode_command",
]

COMMAND_NAMESPACE = "org.stepflow.stream.commands"
COMMAND_SCHEMAS_DIR = SCHEMAS_DIR / "commands"
"""The commands' ``.avsc`` files, one per record plus ``Envelope.avsc``."""

def _load_command_schema() -> dict[str, Any]:
    """The command Envelope as one self-contained document, each named record inlined where it
    is first used; a name is looked up by namespace, commands first, then events."""
    defined: set[str] = set()

    def inline(schema: Any) -> Any:
        if isinstance(schema, list):
            return [inline(branch) for branch in schema]
        if isinstance(schema, dict):
            if schema["type"] == "record":
                defined.add(f"{schema['namespace']}.{schema['name']}")
                record_fields = [
                    {**field, "type": inline(field["type"])} for field in schema["fields"]
                ]
                return {**schema, "fields": record_fields}
            return schema
        if schema in _PRIMITIVES:
            return schema
        namespace, _, name = schema.rpartition(".")
        full_name = schema if namespace else f"{COMMAND_NAMESPACE}.{name}"
        if full_name in defined:
            return full_name
        directory = COMMAND_SCHEMAS_DIR if full_name.startswith(COMMAND_NAMESPACE) else SCHEMAS_DIR
        return inline(_read_schema_file(directory, name))

    envelope: dict[str, Any] = inline(_read_schema_file(COMMAND_SCHEMAS_DIR, "Envelope"))
    return envelope


def _optional_error_info(codec: _RecordCodec) -> _RecordCodec:
    """``codec`` with its ``error: ErrorInfo | None`` field converted, which the events' codec
    derivation leaves alone (events hold an ErrorInfo or none at all)."""
    return dataclasses.replace(
        codec,
        to_avro=(*codec.to_avro, ("error", _error_to_avro)),
        from_avro=(*codec.from_avro, ("error", _error_from_avro)),
    )


def _error_to_avro(error: ErrorInfo | None) -> dict[str, Any] | None:
    return None if error is None else _ERROR_INFO.to_record(error)


def _error_from_avro(record: dict[str, Any] | None) -> ErrorInfo | None:
    return None if record is None else cast(ErrorInfo, _ERROR_INFO.from_record(record))


_COMMAND_SCHEMA = _load_command_schema()
_SCHEMA = parse_schema(copy.deepcopy(_COMMAND_SCHEMA))
COMMAND_SCHEMA_FINGERPRINT = _fingerprint(_COMMAND_SCHEMA)
"""The fingerprint of the command Envelope schema, which :func:`encode_command` writes."""
_HEADER = frame_header(COMMAND_SCHEMA_FINGERPRINT)

_ADDED_FIELDS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("SubmitRun", "forked_from_step"), ("SubmitRun", "reused")),
)
"""Fields added to the command records since the first Envelope schema, one group per schema
version, oldest first (fields are only ever appended, with a default). Commands written by an
older client (a rolling upgrade, or a producer of the user's) are read with the schema they were
written with and resolved to the current one."""


def earlier_command_schemas() -> list[dict[str, Any]]:
    """The command Envelope schemas before each addition, oldest first."""
    return _schemas_before(_COMMAND_SCHEMA, _ADDED_FIELDS)


_writers: dict[bytes, Any] = {
    _fingerprint(schema): parse_schema(copy.deepcopy(schema))
    for schema in earlier_command_schemas()
}

_BY_CLASS: dict[type[Any], tuple[str, _RecordCodec]] = {
    SubmitRun: (f"{COMMAND_NAMESPACE}.SubmitRun", _record_codec(SubmitRun, skip=("run_id",))),
    TaskResult: (
        f"{COMMAND_NAMESPACE}.TaskResult",
        _optional_error_info(_record_codec(TaskResult, skip=("run_id",))),
    ),
    CancelRun: (f"{COMMAND_NAMESPACE}.CancelRun", _record_codec(CancelRun, skip=("run_id",))),
}
_BY_NAME: dict[str, _RecordCodec] = dict(_BY_CLASS.values())


def command_schema() -> dict[str, Any]:
    """A copy of the command Envelope schema, self-contained, as a JSON-like dict."""
    return copy.deepcopy(_COMMAND_SCHEMA)


def encode_command(command: Command) -> bytes:
    """The bytes of ``command``: magic byte, schema fingerprint, Avro body."""
    entry = _BY_CLASS.get(type(command))
    if entry is None:
        raise JournalError(f"no Avro record for command type {type(command).__name__}")
    name, codec = entry
    try:
        envelope = {"run_id": command.run_id, "payload": (name, codec.to_record(command))}
        return write_framed(_HEADER, _SCHEMA, envelope)
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError) as exc:
        raise JournalError(
            f"cannot encode {type(command).__name__} of run {command.run_id!r}: {exc}"
        ) from exc


def decode_command(data: bytes) -> Command:
    """The command in ``data``, written with the current schema or an earlier one."""
    schema_fingerprint = read_header(data, "command")
    if schema_fingerprint == COMMAND_SCHEMA_FINGERPRINT:
        writer, reader = _SCHEMA, None
    elif schema_fingerprint in _writers:
        writer, reader = _writers[schema_fingerprint], _SCHEMA
    else:
        raise JournalError(
            f"unknown command schema fingerprint {schema_fingerprint.hex()}, "
            f"expected {COMMAND_SCHEMA_FINGERPRINT.hex()} or an earlier one"
        )
    try:
        # The override names the record only in the payload union: an optional error stays a
        # plain record or None.
        envelope = read_framed(data, writer, reader, what="command",
                               body_error="malformed command body",
                               return_record_name_override=True)
    except SchemaResolutionError as exc:  # its message prints both schemas whole
        raise JournalError(
            f"a command of schema {schema_fingerprint.hex()} cannot be resolved to the current "
            "schema"
        ) from exc
    name, payload = envelope["payload"]
    try:
        command: Command = _BY_NAME[name].from_record(payload, envelope["run_id"])
    except msgspec.DecodeError as exc:
        raise JournalError(f"malformed command: a JSON field of {name} is not JSON: {exc}") from exc
    return command

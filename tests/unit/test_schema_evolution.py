"""Journals outlive schemas: events written by a newer or an older Envelope schema decode with
the current one, once the writer's schema is registered."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from stepflow_stream.core.events import (
    ErrorInfo,
    RunCreated,
    StepCompleted,
    StepFailed,
    StepStarted,
)
from stepflow_stream.errors import JournalError
from stepflow_stream.journal.codec import (
    NAMESPACE,
    SCHEMA_FINGERPRINT,
    current_schema,
    decode_event,
    earlier_schemas,
    encode_event,
    register_writer_schema,
)


def record_schema(envelope: dict[str, Any], name: str) -> dict[str, Any]:
    """The definition of record ``name`` inside a self-contained Envelope schema."""

    def find(schema: Any) -> dict[str, Any] | None:
        if isinstance(schema, list):
            return next((found for branch in schema if (found := find(branch))), None)
        if isinstance(schema, dict) and schema.get("type") == "record":
            if schema["name"] == name:
                return schema
            return find([field["type"] for field in schema["fields"]])
        return None

    found = find(envelope)
    assert found is not None, name
    return found


def drop_field(record: dict[str, Any], name: str) -> None:
    record["fields"] = [field for field in record["fields"] if field["name"] != name]


def write_with(schema: dict[str, Any], envelope: dict[str, Any]) -> bytes:
    """Encodes with fastavro directly, as a writer with ``schema`` would: 0x01, its
    fingerprint, the Avro body."""
    body = BytesIO()
    schemaless_writer(body, parse_schema(schema), envelope)
    canonical_form = to_parsing_canonical_form(schema)
    schema_fingerprint = bytes.fromhex(fingerprint(canonical_form, "CRC-64-AVRO"))
    return b"\x01" + schema_fingerprint + body.getvalue()


def test_newer_writer_with_added_fields_is_read_without_them() -> None:
    newer = current_schema()
    newer["fields"].append({"name": "trace_id", "type": ["null", "string"], "default": None})
    step_completed = record_schema(newer, "StepCompleted")
    step_completed["fields"].append({"name": "duration_ms", "type": "long", "default": 0})
    data = write_with(
        newer,
        {
            "run_id": "run-9",
            "seq": 4,
            "timestamp": 1_700_000_000_123,
            "trace_id": "trace-abc",
            "payload": (
                f"{NAMESPACE}.StepCompleted",
                {
                    "step_id": "fetch",
                    "task_id": "task-7",
                    "output": '{"rows":[1,2.5]}',
                    "from_default": True,
                    "duration_ms": 812,
                },
            ),
        },
    )

    with pytest.raises(JournalError, match="unknown writer schema fingerprint"):
        decode_event(data)
    assert register_writer_schema(newer) == data[1:9] != SCHEMA_FINGERPRINT

    assert decode_event(data) == StepCompleted(
        "run-9", 4, 1_700_000_000_123, "fetch", "task-7", {"rows": [1, 2.5]}, from_default=True
    )


def test_older_writer_without_optional_fields_reads_their_defaults() -> None:
    older = current_schema()
    run_created = record_schema(older, "RunCreated")
    drop_field(run_created, "batch_id")
    drop_field(run_created, "batch_index")
    drop_field(record_schema(older, "StepCompleted"), "from_default")
    drop_field(record_schema(older, "ErrorInfo"), "data")
    schema_fingerprint = register_writer_schema(older)

    created = write_with(
        older,
        {
            "run_id": "run-1",
            "seq": 0,
            "timestamp": 10,
            "payload": (
                f"{NAMESPACE}.RunCreated",
                {
                    "flow_id": "etl",
                    "input": '{"n":1}',
                    "variables": '{"region":"eu"}',
                    "parent_run_id": "parent-1",
                    "parent_step_id": "fan_out",
                },
            ),
        },
    )
    completed = write_with(
        older,
        {
            "run_id": "run-1",
            "seq": 1,
            "timestamp": 11,
            "payload": (
                f"{NAMESPACE}.StepCompleted",
                {"step_id": "a", "task_id": "t-1", "output": "1.0"},
            ),
        },
    )
    failed = write_with(
        older,
        {
            "run_id": "run-1",
            "seq": 2,
            "timestamp": 12,
            "payload": (
                f"{NAMESPACE}.StepFailed",
                {
                    "step_id": "b",
                    "task_id": "t-2",
                    "attempt": 2,
                    "error": {"code": "TIMEOUT", "message": "too slow"},
                    "retryable": True,
                },
            ),
        },
    )

    assert created[1:9] == schema_fingerprint
    assert decode_event(created) == RunCreated(
        "run-1",
        0,
        10,
        "etl",
        {"n": 1},
        {"region": "eu"},
        parent_run_id="parent-1",
        parent_step_id="fan_out",
        batch_id=None,
        batch_index=None,
    )
    decoded_completed = decode_event(completed)
    assert decoded_completed == StepCompleted("run-1", 1, 11, "a", "t-1", 1.0, from_default=False)
    assert isinstance(decoded_completed, StepCompleted)
    assert type(decoded_completed.output) is float
    assert decode_event(failed) == StepFailed(
        "run-1", 2, 12, "b", "t-2", 2, ErrorInfo("TIMEOUT", "too slow", None), True
    )


def test_step_started_of_a_writer_without_affinity_has_none() -> None:
    older = earlier_schemas()[0]
    data = write_with(
        older,
        {
            "run_id": "run-1",
            "seq": 3,
            "timestamp": 13,
            "payload": (
                f"{NAMESPACE}.StepStarted",
                {"step_id": "a", "task_id": "run-1/a/1", "attempt": 1, "component": "/echo",
                 "plugin": "py", "input": '{"x":1}'},
            ),
        },
    )
    assert decode_event(data) == StepStarted(
        "run-1", 3, 13, "a", "run-1/a/1", 1, "/echo", "py", {"x": 1}, affinity=None
    )


def test_step_started_with_affinity_is_read_by_a_reader_without_it() -> None:
    """Old readers read new records: the added field has a default, so resolution drops it."""
    event = StepStarted("run-1", 3, 13, "a", "run-1/a/1", 1, "/echo", "py", {"x": 1},
                        affinity="user-42")
    data = encode_event(event)
    assert decode_event(data) == event
    older = current_schema()
    drop_field(record_schema(older, "StepStarted"), "affinity")
    envelope = schemaless_reader(
        BytesIO(data[9:]), parse_schema(current_schema()), parse_schema(older)
    )
    assert envelope["payload"] == {
        "step_id": "a", "task_id": "run-1/a/1", "attempt": 1, "component": "/echo",
        "plugin": "py", "input": '{"x":1}',
    }


def test_journals_written_before_affinity_decode_without_registering_anything() -> None:
    """The schema before StepStarted.affinity (fingerprint 78e1191e139cd3cc, as pinned by the
    golden bytes of that time) is known to the codec from the start."""
    before_affinity = earlier_schemas()[0]
    assert "affinity" not in [f["name"] for f in record_schema(before_affinity, "StepStarted")
                              ["fields"]]
    body = b"\x02r\x02\x04\x06\x02s\x02t\x12" + b'{"a":1.5}' + b"\x00"
    data = b"\x01" + bytes.fromhex("78e1191e139cd3cc") + body
    assert decode_event(data) == StepCompleted("r", 1, 2, "s", "t", {"a": 1.5})


def test_registering_the_current_schema_changes_nothing() -> None:
    assert register_writer_schema(current_schema()) == SCHEMA_FINGERPRINT


def test_writer_without_a_reader_branch_is_rejected() -> None:
    newer = current_schema()
    newer["fields"][3]["type"].append(
        {"type": "record", "name": "RunPaused", "namespace": NAMESPACE, "fields": []}
    )
    register_writer_schema(newer)
    data = write_with(
        newer, {"run_id": "r", "seq": 0, "timestamp": 0, "payload": (f"{NAMESPACE}.RunPaused", {})}
    )
    with pytest.raises(JournalError, match="cannot be resolved to the current schema"):
        decode_event(data)


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (
            {"type": "record", "name": f"{NAMESPACE}.Envelope", "fields": [{"name": "x"}]},
            "not a valid Avro schema",
        ),
        (
            {
                "type": "record",
                "name": f"{NAMESPACE}.Envelope",
                "fields": [{"name": "x", "type": "Q"}],
            },
            "not a valid Avro schema: .*Q",
        ),
        (
            {"type": "record", "name": "Other", "fields": []},
            "must be the record .*Envelope, not 'Other'",
        ),
    ],
)
def test_invalid_writer_schema_is_rejected(schema: dict[str, Any], message: str) -> None:
    with pytest.raises(JournalError, match=message):
        register_writer_schema(schema)

"""The Avro encoding of journal events: exact round trips, the wire format, and bad bytes."""

from __future__ import annotations

import contextlib
import dataclasses
from io import BytesIO
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import given
from hypothesis import strategies as st

from stepflow_stream.core.events import (
    EVENT_TYPES,
    ErrorInfo,
    Event,
    RunCancelled,
    RunCancelRequested,
    RunCompleted,
    RunCreated,
    RunFailed,
    StepCompleted,
    StepFailed,
    StepSkipped,
    StepsNeeded,
    StepStarted,
)
from stepflow_stream.errors import JournalError
from stepflow_stream.journal.codec import (
    NAMESPACE,
    SCHEMA_FINGERPRINT,
    current_schema,
    decode_event,
    encode_event,
)

MAX_LONG = 2**63 - 1
MIN_LONG = -(2**63)


def assert_round_trips(event: Event) -> None:
    decoded = decode_event(encode_event(event))
    assert decoded == event
    # == holds for 1 and 1.0, and for True and 1; repr tells them apart, and shows dict order.
    assert repr(decoded) == repr(event)


# Examples with edge values, at least one per event type ----------------------------------------

NESTED = {
    "text": 'ünïcødé ✓ 😀 \u2028 \x00 "quoted"',
    "int": 1,
    "float": 1.0,
    "negative_zero": -0.0,
    "tiny": 5e-324,
    "huge": 1e300,
    "big_int": 2**100,
    "big_negative": -(2**70),
    "flags": [True, False, None],
    "deep": {"a": [{"b": [[], {}]}]},
    "": "empty key",
}

EXAMPLES: list[Event] = [
    RunCreated("run-1", 0, 1_700_000_000_000, "flow", {"x": 1}, {}),
    RunCreated(
        "run-2",
        0,
        0,
        "flöw/ünicode",
        NESTED,
        {"api_key": "k", "n": 2.5},
        parent_run_id="parent",
        parent_step_id="fan_out",
        batch_id="batch-1",
        batch_index=0,
    ),
    RunCreated("run-3", 0, 0, "flow", None, {}, batch_index=MAX_LONG),
    StepsNeeded("run-1", 1, 1, ("a", "b", "ç")),
    StepsNeeded("run-1", 1, 1, ()),
    StepStarted("run-1", 2, 2, "a", "task-1", 1, "/builtin/eval", "builtin", NESTED),
    StepCompleted("run-1", 3, 3, "a", "task-1", [1, 1.0, "1"]),
    StepCompleted("run-1", 3, 3, "a", "task-1", 0.1, from_default=True),
    StepFailed("run-1", 4, 4, "b", "task-2", 3, ErrorInfo("TIMEOUT", "too slow"), True),
    StepFailed(
        "run-1", 4, 4, "b", "task-2", 1, ErrorInfo("COMPONENT_FAILED", "boom", NESTED), False
    ),
    StepSkipped("run-1", 5, 5, "c", "condition false"),
    RunCompleted("run-1", MAX_LONG, MAX_LONG, {"result": [1, 2.0]}),
    RunCompleted("run-1", 6, MIN_LONG, "just a string"),
    RunFailed("run-1", 6, 6, ErrorInfo("INTERNAL", "", {"trace": ["x"]})),
    RunCancelRequested("run-1", 6, 6),
    RunCancelRequested("run-1", 6, 6, "user pressed stop"),
    RunCancelled("run-1", 7, 7, "cancelled by request"),
]


def test_examples_cover_every_event_type() -> None:
    assert {type(event) for event in EXAMPLES} == set(EVENT_TYPES)


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda event: type(event).__name__)
def test_example_round_trips(event: Event) -> None:
    assert_round_trips(event)


def test_json_numbers_keep_their_type() -> None:
    event = StepCompleted("run", 0, 0, "s", "t", {"i": 1, "f": 1.0, "b": True, "big": 2**80})
    decoded = decode_event(encode_event(event))
    assert isinstance(decoded, StepCompleted)
    output = decoded.output
    assert type(output["i"]) is int
    assert type(output["f"]) is float
    assert output["b"] is True
    assert output["big"] == 2**80


def test_steps_needed_reads_back_a_tuple() -> None:
    decoded = decode_event(encode_event(StepsNeeded("run", 0, 0, ("a", "b"))))
    assert isinstance(decoded, StepsNeeded)
    assert decoded.step_ids == ("a", "b")


# Properties -----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
texts = st.text(max_size=20)
longs = st.integers(MIN_LONG, MAX_LONG)
error_infos = st.builds(ErrorInfo, texts, texts, json_values)
envelope: dict[str, Any] = {"run_id": texts, "seq": longs, "timestamp": longs}

events = st.one_of(
    st.builds(
        RunCreated,
        flow_id=texts,
        input=json_values,
        variables=json_objects,
        parent_run_id=st.none() | texts,
        parent_step_id=st.none() | texts,
        batch_id=st.none() | texts,
        batch_index=st.none() | longs,
        **envelope,
    ),
    st.builds(StepsNeeded, step_ids=st.lists(texts, max_size=5).map(tuple), **envelope),
    st.builds(
        StepStarted,
        step_id=texts,
        task_id=texts,
        attempt=longs,
        component=texts,
        plugin=texts,
        input=json_values,
        affinity=st.none() | texts,
        **envelope,
    ),
    st.builds(
        StepCompleted,
        step_id=texts,
        task_id=texts,
        output=json_values,
        from_default=st.booleans(),
        **envelope,
    ),
    st.builds(
        StepFailed,
        step_id=texts,
        task_id=texts,
        attempt=longs,
        error=error_infos,
        retryable=st.booleans(),
        **envelope,
    ),
    st.builds(StepSkipped, step_id=texts, reason=texts, **envelope),
    st.builds(RunCompleted, result=json_values, **envelope),
    st.builds(RunFailed, error=error_infos, **envelope),
    st.builds(RunCancelRequested, reason=texts, **envelope),
    st.builds(RunCancelled, reason=texts, **envelope),
)


@given(events)
def test_every_event_round_trips(event: Event) -> None:
    assert_round_trips(event)


@given(st.binary(max_size=64))
def test_any_body_decodes_or_raises_journal_error(body: bytes) -> None:
    with contextlib.suppress(JournalError):
        decode_event(b"\x01" + SCHEMA_FINGERPRINT + body)


# The wire format ------------------------------------------------------------------------------


def test_schema_records_match_event_dataclasses() -> None:
    records = {branch["name"]: branch for branch in current_schema()["fields"][3]["type"]}
    assert list(records) == [cls.__name__ for cls in EVENT_TYPES]
    for cls in EVENT_TYPES:
        avro_fields = [field["name"] for field in records[cls.__name__]["fields"]]
        assert avro_fields == [field.name for field in dataclasses.fields(cls)][3:]
        assert records[cls.__name__]["namespace"] == NAMESPACE


def test_header_is_magic_byte_and_schema_fingerprint() -> None:
    data = encode_event(RunCancelled("run", 0, 0))
    assert data[:1] == b"\x01"
    assert data[1:9] == SCHEMA_FINGERPRINT


def test_golden_bytes() -> None:
    # Changing the schema changes these bytes. That must be deliberate: journals written with
    # the old schema stay readable only if the old schema is registered.
    event = StepCompleted("r", 1, 2, "s", "t", {"a": 1.5})
    body = b"\x02r\x02\x04\x06\x02s\x02t\x12" + b'{"a":1.5}' + b"\x00\x00"
    assert encode_event(event) == b"\x01" + bytes.fromhex("f0e8f41dc2dc9d8c") + body


# Errors ---------------------------------------------------------------------------------------


def test_unknown_fingerprint_is_named() -> None:
    body = encode_event(RunCancelled("run", 0, 0))[9:]
    with pytest.raises(JournalError, match="unknown writer schema fingerprint ffffffffffffffff"):
        decode_event(b"\x01" + b"\xff" * 8 + body)


VALID = encode_event(StepSkipped("run", 1, 2, "step", "reason"))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "0 bytes, shorter than the 9-byte header"),
        (b"\x01abc", "4 bytes, shorter than the 9-byte header"),
        (b"\x02" + VALID[1:], "magic byte 0x02, expected 0x01"),
        (b'{"run_id": "r", "seq": 1}', "magic byte 0x7b, expected 0x01"),
        (VALID[:-1], "malformed event body"),
        (VALID[:9] + b"\xff\xff\xff", "malformed event body"),
        (VALID + b"\x00", "1 bytes after the body"),
    ],
    ids=["empty", "short", "magic", "json", "truncated", "garbage-body", "trailing"],
)
def test_garbage_bytes_are_rejected(data: bytes, message: str) -> None:
    with pytest.raises(JournalError, match=message):
        decode_event(data)


def test_invalid_json_field_is_rejected() -> None:
    body = BytesIO()
    record = {"run_id": "run", "seq": 0, "timestamp": 0}
    payload = (f"{NAMESPACE}.RunCompleted", {"result": "{not json"})
    schemaless_writer(body, parse_schema(current_schema()), {**record, "payload": payload})
    with pytest.raises(JournalError, match=r"JSON field of .*RunCompleted is not JSON"):
        decode_event(b"\x01" + SCHEMA_FINGERPRINT + body.getvalue())


def test_event_without_record_is_rejected() -> None:
    with pytest.raises(JournalError, match="no Avro record for event type Event"):
        encode_event(Event("run", 0, 0))


def test_seq_beyond_avro_long_is_rejected() -> None:
    with pytest.raises(JournalError, match="cannot encode RunCancelled seq 9223372036854775808"):
        encode_event(RunCancelled("run", MAX_LONG + 1, 0))

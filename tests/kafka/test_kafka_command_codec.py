"""The Avro encoding of commands: exact round trips, the framing, and bad bytes."""

from __future__ import annotations

import copy
import io

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import given
from hypothesis import strategies as st

from stepflow_stream.core.events import CancelRun, Command, ErrorInfo, SubmitRun, TaskResult
from stepflow_stream.errors import JournalError
from stepflow_stream.journal.codec import _fingerprint
from stepflow_stream.kafka.command_codec import (
    COMMAND_NAMESPACE,
    COMMAND_SCHEMA_FINGERPRINT,
    decode_command,
    earlier_command_schemas,
    encode_command,
)

MAX_LONG = 2**63 - 1

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
ids = st.text(min_size=1, max_size=20)
optional_ids = st.none() | ids
errors = st.builds(ErrorInfo, st.text(max_size=10), st.text(max_size=30), json_values)

commands = st.one_of(
    st.builds(SubmitRun, ids, ids, json_values, json_objects, optional_ids, optional_ids,
              optional_ids, st.none() | st.integers(0, MAX_LONG)),
    st.builds(TaskResult, ids, ids, json_values, st.none(), st.booleans()),
    st.builds(TaskResult, ids, ids, st.none(), errors, st.booleans()),
    st.builds(CancelRun, ids, st.text(max_size=30)),
)


def assert_round_trips(command: Command) -> None:
    decoded = decode_command(encode_command(command))
    assert decoded == command
    # == holds for 1 and 1.0, and for True and 1; repr tells them apart.
    assert repr(decoded) == repr(command)


@given(commands)
def test_every_command_round_trips(command: Command) -> None:
    assert_round_trips(command)


@pytest.mark.parametrize(
    "command",
    [
        SubmitRun("run-ü", "flow", {"big": 2**100, "f": 1.0, "i": 1}, {"k": [True, None]},
                  "parent", "step", "batch", MAX_LONG),
        SubmitRun("r", "f", None, {}),
        TaskResult("r", "t", output=[1, 2.5, "x"]),
        TaskResult("r", "t", error=ErrorInfo("COMPONENT_FAILED", "boom", {"d": 1}),
                   retryable=True),
        TaskResult("r", "t", error=ErrorInfo("TIMEOUT", "slow")),
        CancelRun("r"),
        CancelRun("r", ""),
    ],
)
def test_examples_round_trip(command: Command) -> None:
    assert_round_trips(command)


def test_the_header_is_magic_byte_and_fingerprint() -> None:
    data = encode_command(CancelRun("r"))
    assert data[0] == 0x01
    assert data[1:9] == COMMAND_SCHEMA_FINGERPRINT


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01abc", "shorter than the 9-byte header"),
        (b"\x02" + COMMAND_SCHEMA_FINGERPRINT + b"\x00", "magic byte 0x02"),
        (b"\x01" + bytes(8) + b"\x00", "unknown command schema fingerprint"),
        (encode_command(CancelRun("r")) + b"\x00", "1 bytes after the body"),
        (encode_command(CancelRun("run-id"))[:-3], "malformed command body"),
    ],
)
def test_bad_bytes_raise_a_journal_error(data: bytes, message: str) -> None:
    with pytest.raises(JournalError, match=message):
        decode_command(data)


def test_an_event_is_not_a_command() -> None:
    with pytest.raises(JournalError, match="no Avro record for command type"):
        encode_command(ErrorInfo("x", "y"))  # type: ignore[arg-type]


RELEASED_BEFORE_FORKS = bytes.fromhex("4ba98ee72d956cdd")
"""The fingerprint of the command schema clients wrote before forks added two SubmitRun fields
(computed from the schema files of that release)."""


def _written_with(schema: dict[str, object], run_id: str, name: str,
                  record: dict[str, object]) -> bytes:
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(copy.deepcopy(schema)),
                      {"run_id": run_id, "payload": (f"{COMMAND_NAMESPACE}.{name}", record)})
    return b"\x01" + _fingerprint(schema) + body.getvalue()


def test_the_earlier_schema_is_the_one_released_before_forks() -> None:
    assert [_fingerprint(s) for s in earlier_command_schemas()] == [RELEASED_BEFORE_FORKS]


def test_a_submission_by_an_older_client_decodes_with_the_new_fields_defaulted() -> None:
    # A rolling upgrade: an older client's SubmitRun reaches a newer orchestrator.
    [earlier] = earlier_command_schemas()
    data = _written_with(earlier, "run-1", "SubmitRun", {
        "flow_id": "flow-1", "input": '{"n":1}', "variables": "{}", "parent_run_id": None,
        "parent_step_id": None, "batch_id": "b", "batch_index": 3,
    })
    assert data[1:9] == RELEASED_BEFORE_FORKS
    assert decode_command(data) == SubmitRun("run-1", "flow-1", {"n": 1}, {}, batch_id="b",
                                             batch_index=3)
    # Commands that did not change read as before.
    cancel = _written_with(earlier, "run-1", "CancelRun", {"reason": "stop"})
    assert decode_command(cancel) == CancelRun("run-1", "stop")

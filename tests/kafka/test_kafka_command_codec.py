"""The Avro encoding of commands: exact round trips, the framing, and bad bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stepflow_stream.core.events import CancelRun, Command, ErrorInfo, SubmitRun, TaskResult
from stepflow_stream.errors import JournalError
from stepflow_stream.kafka.command_codec import (
    COMMAND_SCHEMA_FINGERPRINT,
    decode_command,
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

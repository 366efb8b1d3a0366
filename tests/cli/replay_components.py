"""A component server that counts its calls, for the fork tests: each call appends the
calling step's id to ``calls.log`` in the working directory (the test's), so a test can tell
which steps a fork ran again and which it reused without calling anything."""

from __future__ import annotations

from pathlib import Path

import msgspec

from stepflow_stream.sdk import ComponentServer

server = ComponentServer("replay-counting")
CALLS = Path("calls.log")


class Tag(msgspec.Struct):
    step: str
    text: str


class Tagged(msgspec.Struct):
    text: str
    call: int
    """How many times this step has been called in this directory, this call included."""


@server.component()
def tag(input: Tag) -> Tagged:
    """Append the step's id to the text, and count the call."""
    with CALLS.open("a", encoding="utf-8") as log:
        log.write(input.step + "\n")
    calls = CALLS.read_text(encoding="utf-8").split()
    return Tagged(f"{input.text}{input.step}", calls.count(input.step))

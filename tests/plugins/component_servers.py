"""Real component servers on loopback, and a stub ExecutionContext, for the plugin tests.

Each server is its own process: ``protocol_server.py`` next to this file, or the command in
``STEPFLOW_TEST_COMPONENT_SERVER`` (split like a shell line) to hold another server to the same
tests. Such a server takes ``--port N`` and ``--capacity N``, prints ``{"port": N}`` on stdout
and offers the components listed in ``protocol_server.py``.
"""

from __future__ import annotations

import os
import select
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgspec

from stepflow_stream.core.events import FlowResult
from stepflow_stream.core.jsonvalue import JSON, JSONObject, content_id
from stepflow_stream.errors import ComponentError, ErrorCode

SERVER_SCRIPT = Path(__file__).with_name("protocol_server.py")


def server_command() -> list[str]:
    """The command line that starts a test component server."""
    custom = os.environ.get("STEPFLOW_TEST_COMPONENT_SERVER")
    return shlex.split(custom) if custom else [sys.executable, str(SERVER_SCRIPT)]


class ServerProcess:
    """A component server subprocess: started, healthy, and stopped or killed on demand."""

    def __init__(self, *args: str) -> None:
        self.args = list(args)
        self.port = 0
        self.process = self._spawn(self.args)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, args: list[str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [*server_command(), *args], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        assert process.stdout is not None
        deadline = time.monotonic() + 15
        while True:
            left = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([process.stdout], [], [], left)
            if not ready:
                process.kill()
                raise RuntimeError("the test component server printed no port")
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"the test component server exited ({process.wait()})")
            try:
                self.port = msgspec.json.decode(line)["port"]
                break
            except (msgspec.DecodeError, KeyError, TypeError):
                continue
        while httpx.get(f"{self.url}/health").status_code != 200:
            time.sleep(0.02)
        return process

    def restart(self) -> None:
        """Start the server again on the same port (after it died)."""
        self.stop()
        self.process = self._spawn([*self.args, "--port", str(self.port)])

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


class StubContext:
    """An ExecutionContext for calling the plugin directly: blobs in a dict, no sub-flows."""

    def __init__(
        self,
        attempt: int = 1,
        run_id: str = "run-1",
        step_id: str = "step-1",
        affinity_key: str | None = None,
    ) -> None:
        self.blobs: dict[str, JSON] = {}
        self.blob_puts = 0
        """put_blob calls, each counted (a blob put twice is stored once)."""
        self._attempt = attempt
        self._run_id = run_id
        self._step_id = step_id
        self._affinity_key = affinity_key

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def step_id(self) -> str:
        return self._step_id

    @property
    def attempt(self) -> int:
        return self._attempt

    @property
    def task_id(self) -> str:
        return f"{self._run_id}/{self._step_id}/{self._attempt}"

    @property
    def affinity_key(self) -> str | None:
        return self._affinity_key

    async def put_blob(self, data: JSON, blob_type: str = "data") -> str:
        blob_id = content_id(data)
        self.blobs[blob_id] = data
        self.blob_puts += 1
        return blob_id

    async def get_blob(self, blob_id: str) -> JSON:
        if blob_id not in self.blobs:
            raise ComponentError(ErrorCode.INVALID_INPUT, f"no blob {blob_id}", retryable=False)
        return self.blobs[blob_id]

    async def evaluate_flow(self, flow: JSONObject, input: JSON) -> tuple[FlowResult, str]:
        raise AssertionError("this test does not expect sub-flows")

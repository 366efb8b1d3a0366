"""A component server in a subprocess, and a caller speaking Stepflow's HTTP protocol to it
(answering callbacks the way the runtime does: a separate POST with Stepflow-Instance-Id)."""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
SAMPLES = "tests.sdk.sample_components:server"
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
STARTUP_TIMEOUT = 15.0


class ServerProcess:
    """``stepflow-stream serve-components`` in a subprocess; ``port`` read from its stdout."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = log
        self._stderr = log.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stepflow_stream.cli.main",
                "serve-components",
                SAMPLES,
                "--port",
                "0",
                *args,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.port = self._read_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def _read_port(self) -> int:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], STARTUP_TIMEOUT)
        line = self.process.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError(f"no port line; stderr:\n{self.log.read_text()}")
        announcement = json.loads(line)
        assert list(announcement) == ["port"], announcement
        return int(announcement["port"])

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()


@dataclass
class Execution:
    """What an execute got back: the final JSON-RPC response and the callbacks on the way."""

    status: int
    headers: httpx.Headers
    response: dict[str, Any]
    callbacks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def streamed(self) -> bool:
        return self.headers["content-type"].startswith("text/event-stream")

    @property
    def output(self) -> Any:
        assert "result" in self.response, self.response
        return self.response["result"]["output"]

    @property
    def error(self) -> dict[str, Any]:
        assert "error" in self.response, self.response
        error: dict[str, Any] = self.response["error"]
        return error


class Caller:
    """The runtime's side: requests, executes, and answers to callbacks from a blob dict and
    a fake sub-run that echoes the flow's name and input."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client = client
        self.url = url
        self.blobs: dict[str, tuple[Any, str]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self._next_id = 0

    async def post(self, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await self.client.post(self.url, content=content, headers=headers or HEADERS)

    async def rpc(self, method: str, params: Any = None) -> httpx.Response:
        self._next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        if params is not None:
            message["params"] = params
        return await self.post(message)

    async def execute(
        self, component: str, input: Any, *, attempt: int = 1, observability: Any = None
    ) -> Execution:
        self._next_id += 1
        body = {
            "jsonrpc": "2.0",
            "id": self._next_id,
            "method": "components/execute",
            "params": {
                "component": component,
                "input": input,
                "attempt": attempt,
                "observability": observability or {"run_id": "run-1", "step_id": "step-1"},
            },
        }
        async with self.client.stream(
            "POST", self.url, content=json.dumps(body).encode(), headers=HEADERS
        ) as response:
            if not response.headers["content-type"].startswith("text/event-stream"):
                await response.aread()
                return Execution(response.status_code, response.headers, response.json())
            instance = response.headers["stepflow-instance-id"]
            callbacks: list[dict[str, Any]] = []
            final: dict[str, Any] = {}
            async for line in response.aiter_lines():
                if not line:
                    continue
                assert line.startswith("data: "), line
                message = json.loads(line.removeprefix("data: "))
                if "method" not in message:
                    final = message
                    continue
                callbacks.append(message)
                answered = await self.post(
                    self.answer(message), {**HEADERS, "Stepflow-Instance-Id": instance}
                )
                assert answered.status_code == 202, answered.text
            return Execution(response.status_code, response.headers, final, callbacks)

    def answer(self, callback: dict[str, Any]) -> dict[str, Any]:
        """The runtime's response to one callback request."""
        method, params = callback["method"], callback["params"]
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": callback["id"]}
        if method == "blobs/put":
            blob_id = hashlib.sha256(
                json.dumps(params["data"], separators=(",", ":")).encode()
            ).hexdigest()
            self.blobs[blob_id] = (params["data"], params["blob_type"])
            reply["result"] = {"blob_id": blob_id}
        elif method == "blobs/get":
            if params["blob_id"] not in self.blobs:
                reply["error"] = {"code": -32004, "message": f"blob {params['blob_id']} not found"}
            else:
                data, blob_type = self.blobs[params["blob_id"]]
                reply["result"] = {"data": data, "blob_type": blob_type}
        elif method == "runs/submit":
            flow, _ = self.blobs[params["flowId"]]
            status = _run_status(
                f"sub-run-{len(self.runs)}", params["flowId"], flow, params["inputs"]
            )
            self.runs[status["runId"]] = status
            if flow.get("name") == "deferred":
                # As if the runtime ignored wait: the component has to ask runs/get.
                status = {**status, "status": "running"}
                del status["results"]
            reply["result"] = status
        elif method == "runs/get":
            reply["result"] = self.runs[params["runId"]]
        else:
            reply["error"] = {"code": -32601, "message": f"Method not found: {method}"}
        return reply


def _run_status(
    run_id: str, flow_id: str, flow: dict[str, Any], inputs: list[Any]
) -> dict[str, Any]:
    """A finished RunStatusProtocol whose item results echo the flow's name and inputs."""
    return {
        "runId": run_id,
        "flowId": flow_id,
        "status": "completed",
        "items": {
            "total": len(inputs),
            "completed": len(inputs),
            "running": 0,
            "failed": 0,
            "cancelled": 0,
        },
        "createdAt": "2025-01-01T00:00:00Z",
        "results": [
            {
                "itemIndex": index,
                "status": "completed",
                "result": {
                    "outcome": "success",
                    "result": {"flow": flow.get("name"), "input": item},
                },
            }
            for index, item in enumerate(inputs)
        ],
    }

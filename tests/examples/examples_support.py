"""The example component servers of ``examples/components`` as real subprocesses, and their
flows' test cases run through an EmbeddedRuntime configured to reach them."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec

from stepflow_stream.config import load_config
from stepflow_stream.core.flow import Flow, TestCase, parse_flow
from stepflow_stream.core.source import parse_document
from stepflow_stream.errors import FlowError
from stepflow_stream.flowtests import result_matches
from stepflow_stream.journal.memory import MemoryBlobStore, MemoryJournal
from stepflow_stream.runtime.embedded import EmbeddedOptions, EmbeddedRuntime

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "components"
FLOWS = EXAMPLES / "flows"
INPUTS = EXAMPLES / "inputs"
URL_CONFIG = EXAMPLES / "stepflow-config.url.yml"
CLI = [sys.executable, "-m", "stepflow_stream.cli.main"]

SERVERS = {"cpu": "cpu_server", "memory": "memory_server", "ml": "ml_server"}
"""Plugin name in the example configs -> module under examples/components."""
URL_VARIABLES = {
    "cpu": "STEPFLOW_EXAMPLE_CPU_URL",
    "memory": "STEPFLOW_EXAMPLE_MEMORY_URL",
    "ml": "STEPFLOW_EXAMPLE_ML_URL",
}
"""Plugin name -> the variable ``stepflow-config.url.yml`` reads its URL from."""
STARTUP_SECONDS = 30


class ExampleServer:
    """``stepflow-stream serve-components examples.components.MODULE:server --port 0``."""

    def __init__(self, module: str, log: Path) -> None:
        self.module = module
        self.log = log
        self.port = 0
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [*CLI, "serve-components", f"examples.components.{module}:server",
                 "--port", "0", "--app-dir", str(REPO), "--log-level", "warning"],
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        """Read the ``{"port": N}`` line, then poll ``/health`` until it answers 200."""
        stdout = self.process.stdout
        assert stdout is not None
        deadline = time.monotonic() + STARTUP_SECONDS
        while not self.port:
            ready, _, _ = select.select([stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = stdout.readline() if ready else b""
            if not line:
                self.stop()
                raise RuntimeError(f"{self.module} printed no port; its log:\n{self.read_log()}")
            self.port = msgspec.json.decode(line)["port"]
        while httpx.get(f"{self.url}/health").status_code != 200:
            time.sleep(0.02)

    def read_log(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_servers(log_dir: Path) -> dict[str, ExampleServer]:
    """All three example servers, started together (the ml one trains its model first)."""
    servers = {name: ExampleServer(module, log_dir / f"{name}.log")
               for name, module in SERVERS.items()}
    try:
        for server in servers.values():
            server.wait_ready()
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


def url_environment(servers: Mapping[str, ExampleServer]) -> dict[str, str]:
    """The environment under which ``stepflow-config.url.yml`` points at ``servers``."""
    return {**os.environ, **{URL_VARIABLES[name]: s.url for name, s in servers.items()}}


def flow_files() -> list[Path]:
    return sorted(FLOWS.glob("*.yaml"))


def load_flow(path: Path) -> Flow:
    document = parse_document(path.read_text(encoding="utf-8"), str(path), FlowError)
    return parse_flow(document, str(path))


@dataclass(frozen=True)
class FlowCase:
    """One ``test.cases`` entry of one example flow."""

    path: Path
    flow: Flow
    case: TestCase

    @property
    def id(self) -> str:
        return f"{self.path.stem}::{self.case.name}"


def flow_cases() -> list[FlowCase]:
    cases = []
    for path in flow_files():
        flow = load_flow(path)
        assert flow.test is not None, f"{path} has no test cases"
        cases.extend(FlowCase(path, flow, case) for case in flow.test.cases)
    return cases


def url_runtime(env: Mapping[str, str]) -> EmbeddedRuntime:
    """An in-memory runtime whose plugins are those of ``stepflow-config.url.yml``."""
    return EmbeddedRuntime(
        load_config(URL_CONFIG, env),
        MemoryJournal(),
        MemoryBlobStore(),
        EmbeddedOptions(base_dir=EXAMPLES, env=env),
    )


async def run_case(runtime: EmbeddedRuntime, flow_case: FlowCase) -> str:
    """Empty when the case's result matches its expected output; else the difference."""
    _, result = await runtime.run(flow_case.flow, flow_case.case.input, flow_case.case.variables)
    problem = result_matches(flow_case.case.output, result)
    return f"{problem}\nactual: {result.to_json()}" if problem else ""

"""The example flows of ``examples/components`` run against the example component servers,
started as real ``serve-components`` subprocesses: every ``test.cases`` entry through
``stepflow-config.url.yml``, each input file under ``inputs/``, the engine starting the servers
itself (``stepflow-config.yml``, the CLI ``test`` command) and ``run-example``."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest
from examples_support import (
    CLI,
    EXAMPLES,
    INPUTS,
    REPO,
    ExampleServer,
    FlowCase,
    flow_cases,
    flow_files,
    load_flow,
    run_case,
    url_environment,
    url_runtime,
)

CASES = flow_cases()


@pytest.mark.parametrize("flow_case", CASES, ids=[case.id for case in CASES])
async def test_each_flow_case_passes_against_the_running_servers(
    flow_case: FlowCase, example_servers: dict[str, ExampleServer]
) -> None:
    async with url_runtime(url_environment(example_servers)) as runtime:
        problem = await run_case(runtime, flow_case)
    assert not problem, problem


@pytest.mark.parametrize("path", flow_files(), ids=lambda path: path.stem)
async def test_each_flow_succeeds_on_its_example_input(
    path: Path, example_servers: dict[str, ExampleServer]
) -> None:
    input_file = INPUTS / f"{path.stem}.json"
    flow = load_flow(path)
    async with url_runtime(url_environment(example_servers)) as runtime:
        _, result = await runtime.run(flow, json.loads(input_file.read_text(encoding="utf-8")))
    assert result.ok, result.to_json()


def test_every_flow_has_cases_and_an_input_file() -> None:
    names = [path.stem for path in flow_files()]
    assert names == ["field_survey", "iris_predict", "sales_report", "text_pipeline"]
    assert sorted(path.stem for path in INPUTS.glob("*.json")) == names
    assert {case.path.stem for case in CASES} == set(names)


def test_the_engine_starts_the_servers_itself_from_the_command_config() -> None:
    """``stepflow-stream test`` finds ``stepflow-config.yml`` above the flow; its ``command:``
    plugins start all three servers, which the flow uses (plus the builtin plugin)."""
    done = subprocess.run(
        [*CLI, "test", "examples/components/flows/field_survey.yaml"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "2 passed, 0 failed", done.stdout


def _ports_free(*ports: int) -> bool:
    """Whether a server could listen on each port (as uvicorn does, with SO_REUSEADDR, so
    connections of a stopped server in TIME_WAIT do not count)."""
    for port in ports:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


@pytest.mark.skipif(not _ports_free(8101, 8102, 8103), reason="ports 8101-8103 are in use")
def test_run_example_serves_on_fixed_ports_runs_a_flow_and_stops_the_servers() -> None:
    done = subprocess.run(
        [str(EXAMPLES / "run-example"), "iris_predict"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "outcome: success" in done.stdout
    assert "labels: [setosa, versicolor, virginica, virginica]" in done.stdout
    assert "1 of 1 flows succeeded" in done.stderr
    assert _ports_free(8101, 8102, 8103), "run-example left a server running"

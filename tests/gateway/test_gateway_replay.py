"""Replay and fork through the gateway, in front of real agents (direct driver) on the real
Kafka and PostgreSQL: a run's state at any event, a fork that reuses the steps before its
step (their components are not called: no StepStarted), the parent link, bad requests, and
tenants."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from agents_cluster import ORCHESTRATOR, AgentsCluster
from gateway_support import PLUGINS, auth, gateway_section

from gateway.app import create_app
from gateway.settings import gateway_settings
from stepflow_stream.config import load_config
from stepflow_stream.distributed.options import distributed_options

FLOW: dict[str, Any] = {
    "schema": "https://stepflow.org/schemas/v1/flow.json",
    "name": "diamond",
    "steps": [
        {"id": "top", "component": "/builtin/sleep",
         "input": {"duration_ms": 0, "passthrough": {"letters": {"$input": "letters"}}}},
        {"id": "left", "component": "/builtin/sleep",
         "input": {"duration_ms": 0, "passthrough": {"$step": "top", "path": "$.letters[0]"}}},
        {"id": "right", "component": "/builtin/sleep",
         "input": {"duration_ms": 0, "passthrough": {"$step": "top", "path": "$.letters[1]"}}},
        {"id": "bottom", "component": "/builtin/sleep",
         "input": {"duration_ms": 0, "passthrough": {"l": {"$step": "left"},
                                                     "r": {"$step": "right"}}}},
    ],
    "output": {"$step": "bottom"},
}


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str,
                postgres_url: str) -> Iterator[Path]:
    """A cluster's config with a gateway section, and its agents running."""
    cluster = AgentsCluster(tmp_path_factory.mktemp("replay"), kafka_bootstrap, postgres_url,
                            plugins_document=PLUGINS, driver="direct")
    try:
        cluster.start_all([ORCHESTRATOR, "worker:builtin"])
        document = yaml.safe_load(cluster.config_path.read_text())
        document["gateway"] = gateway_section()
        path = cluster.root / "gateway-config.yml"
        path.write_text(yaml.safe_dump(document))
        yield path
    finally:
        cluster.stop()
        cluster.delete_topics()


@pytest.fixture
async def app(config_path: Path) -> AsyncIterator[Any]:
    config = load_config(config_path, os.environ)
    app = create_app(config, distributed_options(config),
                     settings=gateway_settings(config_path, os.environ))
    async with app.router.lifespan_context(app):
        yield app


def _http(app: Any, who: str = "admin") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                             base_url="http://gw/api/v1", headers=auth(who), timeout=30)


async def _run(http: httpx.AsyncClient, letters: list[str]) -> tuple[str, dict[str, Any]]:
    stored = await http.post("/flows", json={"flow": FLOW})
    assert stored.status_code == 200, stored.text
    answer = await http.post("/runs", json={"flowId": stored.json()["flowId"], "wait": True,
                                            "input": {"letters": letters}})
    assert answer.status_code == 200 and answer.json()["status"] == "completed", answer.text
    return str(answer.json()["runId"]), answer.json()["result"]


async def _ended(http: httpx.AsyncClient, run_id: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        response = await http.get(f"/runs/{run_id}/state")
        if response.status_code == 200 and response.json()["status"] in ("completed", "failed"):
            state: dict[str, Any] = response.json()
            return state
        assert time.monotonic() < deadline, response.text
        await asyncio.sleep(0.05)


def _error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    assert set(response.json()) == {"code", "message"}
    for word in words:
        assert word in response.json()["message"], response.text


async def test_the_state_at_each_event(app: Any) -> None:
    async with _http(app) as http:
        run_id, result = await _run(http, ["a", "b"])
        final = (await http.get(f"/runs/{run_id}/state")).json()
        first = (await http.get(f"/runs/{run_id}/state", params={"at": 0})).json()
        states = [(await http.get(f"/runs/{run_id}/state", params={"at": seq})).json()
                  for seq in range(final["lastSeq"] + 1)]
    assert result == {"outcome": "success", "result": {"l": "a", "r": "b"}}
    assert (final["at"], final["status"], final["result"]) == (final["lastSeq"], "completed",
                                                               result)
    assert final["steps"]["right"] == {"status": "completed", "attempt": 1,
                                       "component": "/sleep",
                                       "input": {"duration_ms": 0, "passthrough": "b"},
                                       "output": "b"}
    assert (first["at"], first["status"], first["steps"]) == (0, "running", {})
    assert first["input"] == {"letters": ["a", "b"]} and "result" not in first
    assert states[-1] == final
    # Steps only ever move forward: blocked, running, completed.
    order = ["blocked", "running", "completed"]
    for before, after in itertools.pairwise(states):
        for step_id, step in before["steps"].items():
            assert order.index(after["steps"][step_id]["status"]) >= order.index(step["status"])


async def test_bad_state_requests(app: Any) -> None:
    async with _http(app) as http:
        run_id, _ = await _run(http, ["a", "b"])
        last = (await http.get(f"/runs/{run_id}/state")).json()["lastSeq"]
        for at in ("x", "-1", str(last + 1), "1e3", ""):
            _error(await http.get(f"/runs/{run_id}/state", params={"at": at}), 400, "'at'",
                   f"from 0 to {last}")
        _error(await http.get(f"/runs/{run_id}/state", params={"seq": 1}), 400, "'seq'")
        _error(await http.get("/runs/no-such-run/state"), 404, "'no-such-run'")
        _error(await http.post("/runs/no-such-run/fork", json={"fromStep": "a"}), 404,
               "'no-such-run'")
        _error(await http.post(f"/runs/{run_id}/fork", json={"fromStep": "ghost"}), 400,
               "'fromStep'", "'ghost'", "top, left, right, bottom")
        _error(await http.post(f"/runs/{run_id}/fork", json={}), 400, "'fromStep'")
        _error(await http.post(f"/runs/{run_id}/fork", json={"fromStep": "top", "x": 1}), 400,
               "'x'")


async def test_a_fork_reuses_the_steps_before_its_step(app: Any) -> None:
    async with _http(app) as http:
        parent, result = await _run(http, ["a", "b"])
        forked = await http.post(f"/runs/{parent}/fork", json={"fromStep": "right"})
        assert forked.status_code == 202, forked.text
        answer = forked.json()
        state = await _ended(http, answer["runId"])
        detail = (await http.get(f"/runs/{answer['runId']}")).json()
        other = await http.post(f"/runs/{parent}/fork",
                                json={"fromStep": "right", "input": {"letters": ["a", "z"]}})
        changed = await _ended(http, other.json()["runId"])
    assert answer == {"runId": answer["runId"], "parentRunId": parent, "fromStep": "right",
                      "status": "pending", "reusedSteps": ["top", "left"],
                      "rerunSteps": ["right", "bottom"]}
    assert state["result"] == result
    assert (state["parentRunId"], state["forkedFromStep"]) == (parent, "right")
    assert state["steps"]["top"]["reusedFrom"] == parent
    assert state["steps"]["left"] == {"status": "completed", "attempt": 0, "input": None,
                                      "output": "a", "reusedFrom": parent}
    assert "reusedFrom" not in state["steps"]["right"]
    assert state["steps"]["right"]["attempt"] == 1  # started: its component was called
    assert detail["parentRunId"] == parent
    # Another input changes top's input: nothing is reused.
    assert other.json()["reusedSteps"] == []
    assert changed["result"] == {"outcome": "success", "result": {"l": "a", "r": "z"}}


async def test_tenants_see_and_fork_only_their_runs(app: Any) -> None:
    async with _http(app, "a") as tenant_a, _http(app, "b") as tenant_b:
        run_id, _ = await _run(tenant_a, ["a", "b"])
        _error(await tenant_b.get(f"/runs/{run_id}/state"), 404, f"'{run_id}'")
        _error(await tenant_b.post(f"/runs/{run_id}/fork", json={"fromStep": "top"}), 404)
        forked = await tenant_a.post(f"/runs/{run_id}/fork", json={"fromStep": "bottom"})
        assert forked.status_code == 202, forked.text
        fork_id = forked.json()["runId"]
        assert (await _ended(tenant_a, fork_id))["status"] == "completed"
        _error(await tenant_b.get(f"/runs/{fork_id}/state"), 404)

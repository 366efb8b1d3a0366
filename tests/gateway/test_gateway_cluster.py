"""The gateway over real HTTP (uvicorn on loopback) in front of real agents (direct driver):
submit and wait, batches and paging, run detail with step statuses, tenants, secrets never in
an answer, cancel, a wait that times out, and health."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from agents_cluster import ORCHESTRATOR, AgentsCluster, serving
from gateway_support import PLUGINS, auth, gateway_section
from httpx_sse import aconnect_sse

from gateway.app import create_app
from gateway.batch_events import batch_event_routes
from gateway.events import event_routes, serving_events
from gateway.settings import gateway_settings
from stepflow_stream.config import load_config
from stepflow_stream.distributed.options import distributed_options

SECRET = "s3cr3t-do-not-show"
SECRET_ENV = "STEPFLOW_GATEWAY_TEST_API_KEY"
ECHO_SECRET_FLOW: dict[str, Any] = {
    "schema": "https://stepflow.org/schemas/v1/flow.json",
    "name": "echo_secret",
    "variablesSchema": {"type": "object", "properties": {
        "api_key": {"type": "string", "is_secret": True, "env_var": SECRET_ENV}}},
    "steps": [
        {"id": "echo", "component": "/builtin/sleep",
         "input": {"duration_ms": 1, "passthrough": {"key": {"$variable": "api_key"},
                                                     "note": {"$input": "note"}}}},
    ],
    "output": {"echoed": {"$step": "echo"}, "direct": {"$variable": "api_key"}},
}
FLOW: dict[str, Any] = {
    "schema": "https://stepflow.org/schemas/v1/flow.json",
    "name": "double_sleep",
    "variablesSchema": {"type": "object",
                  "properties": {"api_key": {"type": "string", "is_secret": True}}},
    "steps": [
        {"id": "a", "component": "/builtin/sleep",
         "input": {"duration_ms": {"$input": "ms"}, "passthrough": {"$input": "x"}}},
        {"id": "b", "component": "/builtin/sleep",
         "input": {"duration_ms": 1, "passthrough": {"$step": "a"}}},
    ],
    "output": {"$step": "b"},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str,
            postgres_url: str) -> Iterator[AgentsCluster]:
    cluster = AgentsCluster(tmp_path_factory.mktemp("cluster"), kafka_bootstrap, postgres_url,
                            plugins_document=PLUGINS, driver="direct")
    # Secret variables reach the orchestrator from its own environment.
    os.environ[SECRET_ENV] = SECRET
    try:
        cluster.start_all([ORCHESTRATOR, "worker:builtin"])
        yield cluster
    finally:
        cluster.stop()
        cluster.delete_topics()
        os.environ.pop(SECRET_ENV, None)


@pytest.fixture(scope="module")
def gateway(cluster: AgentsCluster) -> Iterator[str]:
    """The gateway of the cluster's config plus a ``gateway`` section, served by uvicorn."""
    document = yaml.safe_load(cluster.config_path.read_text())
    document["gateway"] = gateway_section()
    path: Path = cluster.root / "gateway-config.yml"
    path.write_text(yaml.safe_dump(document))
    config = load_config(path, os.environ)
    app = create_app(config, distributed_options(config),
                     settings=gateway_settings(path, os.environ),
                     extra_routes=[*event_routes(ping_s=1), *batch_event_routes(ping_s=1)],
                     lifespans=[serving_events])
    with serving(app) as url:
        yield f"{url}/api/v1"


def _http(gateway: str, who: str = "admin") -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gateway, headers=auth(who), timeout=30)


async def _flow_id(http: httpx.AsyncClient) -> str:
    response = await http.post("/flows", json={"flow": FLOW})
    assert response.status_code == 200, response.text
    return str(response.json()["flowId"])


async def _until(http: httpx.AsyncClient, path: str, status: set[int] | None = None,
                 timeout_s: float = 15) -> httpx.Response:
    """GET ``path`` until it answers 200 (the run index lags the submission a little)."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = await http.get(path)
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.05)


async def test_a_run_submitted_with_wait_answers_its_result(gateway: str) -> None:
    async with _http(gateway) as http:
        flow_id = await _flow_id(http)
        submitted = await http.post("/runs", json={
            "flowId": flow_id, "input": {"x": 7, "ms": 20}, "wait": True,
            "variables": {"api_key": SECRET}})
        assert submitted.status_code == 200, submitted.text
        answer = submitted.json()
        assert answer["status"] == "completed"
        assert answer["result"] == {"outcome": "success", "result": 7}
        run_id = answer["runId"]
        detail = await http.get(f"/runs/{run_id}")
        listed = await http.get("/runs", params={"flowId": flow_id})
        metrics = (await http.get("/metrics")).text
    assert detail.status_code == 200
    run = detail.json()
    assert run["flowId"] == flow_id and run["status"] == "completed"
    assert run["input"] == {"x": 7, "ms": 20}
    assert run["createdAt"] <= run["finishedAt"]
    # In the order they became needed: the output's step first.
    assert sorted((s["stepId"], s["status"], s["attempt"]) for s in run["steps"]) == [
        ("a", "completed", 1), ("b", "completed", 1)]
    assert run["variables"] == {"api_key": "[redacted]"}
    assert run_id in [r["runId"] for r in listed.json()["runs"]]
    for text in (submitted.text, detail.text, listed.text):
        assert SECRET not in text
    assert "stepflow_gateway_runs_submitted_total" in metrics
    assert 'route="/api/v1/runs/{run_id}",status="200"' in metrics


async def test_a_batch_is_waited_for_and_paged_through(gateway: str) -> None:
    async with _http(gateway) as http:
        flow_id = await _flow_id(http)
        batch = await http.post("/runs/batch", json={
            "flowId": flow_id, "inputs": [{"x": i, "ms": 1} for i in range(3)], "wait": True})
        assert batch.status_code == 200, batch.text
        body = batch.json()
        assert [r["result"] for r in body["results"]] == [0, 1, 2]
        first = (await http.get("/runs", params={"batchId": body["batchId"],
                                                 "limit": "2"})).json()
        second = (await http.get("/runs", params={"batchId": body["batchId"], "limit": "2",
                                                  "pageToken": first["nextPageToken"]})).json()
    paged = [r["runId"] for r in first["runs"] + second["runs"]]
    assert sorted(paged) == sorted(body["runIds"])
    assert "nextPageToken" not in second
    assert {r["batchIndex"] for r in first["runs"] + second["runs"]} == {0, 1, 2}


async def test_a_tenant_sees_only_its_runs(gateway: str) -> None:
    async with _http(gateway, "a") as a, _http(gateway, "b") as b, \
            _http(gateway) as admin:
        flow_id = await _flow_id(a)
        mine = (await a.post("/runs", json={"flowId": flow_id, "input": {"x": 1, "ms": 1},
                                            "wait": True})).json()["runId"]
        theirs = (await b.post("/runs", json={"flowId": flow_id, "input": {"x": 2, "ms": 1},
                                              "wait": True})).json()["runId"]
        listed_a = {r["runId"] for r in (await a.get("/runs")).json()["runs"]}
        listed_admin = {r["runId"] for r in (await admin.get("/runs")).json()["runs"]}
        assert (await a.get(f"/runs/{theirs}")).status_code == 404
        assert (await b.post(f"/runs/{mine}/cancel")).status_code == 404
        assert (await a.get(f"/runs/{mine}")).status_code == 200
        taken = await b.post("/runs", json={"flowId": flow_id, "input": {"x": 3, "ms": 1},
                                            "runId": mine})
    assert mine in listed_a and theirs not in listed_a
    assert {mine, theirs} <= listed_admin
    assert taken.status_code == 409 and "runId" in taken.json()["message"]


async def test_a_run_is_cancelled_and_a_short_wait_answers_running(gateway: str) -> None:
    async with _http(gateway) as http:
        flow_id = await _flow_id(http)
        slow = await http.post("/runs", json={"flowId": flow_id, "input": {"x": 1, "ms": 5000},
                                              "wait": True, "timeoutSeconds": 0.3})
        assert slow.status_code == 202
        assert slow.json()["status"] in ("pending", "running")
        run_id = slow.json()["runId"]
        await _until(http, f"/runs/{run_id}")
        cancelled = await http.post(f"/runs/{run_id}/cancel")
        assert cancelled.status_code == 202
        deadline = time.monotonic() + 15
        while (await http.get(f"/runs/{run_id}")).json()["status"] != "cancelled":
            assert time.monotonic() < deadline, "the run was not cancelled"
            await asyncio.sleep(0.05)
        again = await http.post(f"/runs/{run_id}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["message"]


async def test_health_needs_no_token_and_names_this_instance(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, timeout=10) as http:
        health = await http.get("/health")
        refused = await http.get("/runs")
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["instanceId"]
    assert refused.status_code == 401


async def test_extra_routes_are_served_behind_the_same_token_check(gateway: str) -> None:
    async with _http(gateway) as http:
        flow_id = await _flow_id(http)
        run_id = (await http.post("/runs", json={"flowId": flow_id, "input": {"x": 1, "ms": 1},
                                                 "wait": True})).json()["runId"]
        events = await http.get(f"/runs/{run_id}/events")
        refused = await http.get(f"/runs/{run_id}/events", headers={"Authorization": ""})
        document = (await http.get("/openapi.json")).json()
    assert events.status_code == 200
    assert "event: RunCompleted" in events.text
    assert refused.status_code == 401
    assert "get" in document["paths"]["/api/v1/runs/{run_id}/events"]


async def test_a_secret_echoed_by_a_component_is_in_no_answer_event_or_log(
    gateway: str, cluster: AgentsCluster
) -> None:
    async with _http(gateway) as http:
        created = await http.post("/flows", json={"flow": ECHO_SECRET_FLOW})
        assert created.status_code == 200, created.text
        submitted = await http.post("/runs", json={
            "flowId": created.json()["flowId"], "input": {"note": "hello"}, "wait": True})
        assert submitted.status_code == 200, submitted.text
        run_id = submitted.json()["runId"]
        detail = await http.get(f"/runs/{run_id}")
        events = await http.get(f"/runs/{run_id}/events")
        listed = await http.get("/runs")
    # The component got the real value (else the echo would be null) and it was redacted on
    # the way into the journal, as was the flow's own reference to it.
    assert submitted.json()["result"] == {"outcome": "success", "result": {
        "echoed": {"key": "[redacted]", "note": "hello"}, "direct": "[redacted]"}}
    assert "event: RunCompleted" in events.text
    for text in (submitted.text, detail.text, events.text, listed.text,
                 *(agent.log() for agent in cluster.processes.values())):
        assert SECRET not in text


async def _sse(http: httpx.AsyncClient, path: str) -> list[tuple[str | None, str, Any]]:
    """(id, event, data) of each message of a stream, until the server ends it."""
    messages: list[tuple[str | None, str, Any]] = []
    async with aconnect_sse(http, "GET", path) as source:
        assert source.response.status_code == 200
        async for message in source.aiter_sse():
            if message.data:  # keep-alive pings have none
                messages.append((message.id or None, message.event, json.loads(message.data)))
    return messages


async def test_a_batch_stream_gives_each_result_once_then_the_end(gateway: str) -> None:
    inputs = [{"x": i, "ms": 1500 - 290 * i} for i in range(5)] + [{"x": "bad", "ms": -1}]
    async with _http(gateway, "a") as http, _http(gateway, "b") as other:
        flow_id = await _flow_id(http)
        submitted = await http.post("/runs/batch", json={"flowId": flow_id, "inputs": inputs})
        assert submitted.status_code == 202, submitted.text
        batch_id = submitted.json()["batchId"]
        live = await _sse(http, f"/batches/{batch_id}/events")
        again = await _sse(http, f"/batches/{batch_id}/events")
        hidden = await other.get(f"/batches/{batch_id}/events")
        unknown = await http.get("/batches/no-such-batch/events")
        run_hidden = await other.get(f"/runs/{submitted.json()['runIds'][0]}/events")
    for messages in (live, again):
        results = [data for _, event, data in messages if event == "result"]
        assert sorted(r["batchIndex"] for r in results) == list(range(6))
        by_index = {r["batchIndex"]: r for r in results}
        assert [by_index[i]["result"] for i in range(5)] == [
            {"outcome": "success", "result": i} for i in range(5)]
        assert by_index[5]["status"] == "failed"
        assert by_index[5]["result"]["outcome"] == "failed"
        assert all(r["runId"] == submitted.json()["runIds"][r["batchIndex"]] for r in results)
        assert all(msg_id == str(data["batchIndex"])
                   for msg_id, event, data in messages if event == "result")
        assert messages[-1][1:] == ("BatchFinished", {"size": 6, "done": 6, "failed": 1})
        progress = [data["done"] for _, event, data in messages if event == "progress"]
        assert progress == sorted(progress) and progress[-1] == 6
    # Followed live: results came as runs finished, the slow first item not first.
    assert len([m for m in live if m[1] == "progress"]) > 1
    assert hidden.status_code == 404 and unknown.status_code == 404
    assert run_hidden.status_code == 404
    assert "no batch with id 'no-such-batch'" in unknown.json()["message"]

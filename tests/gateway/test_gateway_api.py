"""The API in front of a deployment without agents (real Kafka and PostgreSQL, the app over
httpx's ASGI transport): flows, blobs, components, health, metrics, OpenAPI, and every kind of
bad request answered with a 4xx and JSON naming the field."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from gateway_support import auth
from starlette.routing import Route

from gateway.app import create_app
from gateway.openapi import OPERATIONS
from gateway.settings import gateway_settings
from stepflow_stream.config import load_config
from stepflow_stream.distributed.options import distributed_options

FLOW = {
    "schema": "https://stepflow.org/schemas/v1/flow.json",
    "name": "echo",
    "inputSchema": {"type": "object", "properties": {"x": {"type": "integer"}}},
    "steps": [{"id": "a", "component": "/builtin/sleep",
               "input": {"duration_ms": 1, "passthrough": {"$input": "x"}}}],
    "output": {"$step": "a"},
}


@pytest.fixture
async def http(standalone_config: Path) -> AsyncIterator[httpx.AsyncClient]:
    config = load_config(standalone_config, os.environ)
    app = create_app(config, distributed_options(config),
                     settings=gateway_settings(standalone_config, os.environ))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw/api/v1",
                                     headers=auth("admin")) as client:
            yield client


def _error(response: httpx.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message"}
    for word in words:
        assert word in body["message"], body["message"]
    return str(body["code"])


async def _flow_id(http: httpx.AsyncClient) -> str:
    response = await http.post("/flows", json={"flow": FLOW})
    assert response.status_code == 200, response.text
    return str(response.json()["flowId"])


async def test_a_flow_is_stored_once_by_content_and_read_back(
    http: httpx.AsyncClient,
) -> None:
    flow_id = await _flow_id(http)
    assert await _flow_id(http) == flow_id
    got = await http.get(f"/flows/{flow_id}")
    assert got.status_code == 200
    assert got.json()["flowId"] == flow_id
    assert got.json()["flow"]["steps"][0]["id"] == "a"


async def test_a_bad_flow_is_refused_naming_the_step_and_field(http: httpx.AsyncClient) -> None:
    bad_ref = {**FLOW, "steps": [{"id": "a", "component": "/builtin/sleep",
                                  "input": {"$step": "nope"}}]}
    _error(await http.post("/flows", json={"flow": bad_ref}), 400, "'a'", "nope")
    unrouted = {**FLOW, "steps": [{"id": "a", "component": "/elsewhere/x", "input": {}}]}
    _error(await http.post("/flows", json={"flow": unrouted}), 400, "/elsewhere/x")
    _error(await http.post("/flows", json={"flow": [1]}), 400, "'flow'", "an object")
    _error(await http.post("/flows", json={}), 400, "'flow'", "required")


async def test_a_run_is_accepted_and_submissions_are_counted(http: httpx.AsyncClient) -> None:
    flow_id = await _flow_id(http)
    response = await http.post("/runs", json={"flowId": flow_id, "input": {"x": 1},
                                              "runId": "fixed-run-id"})
    assert response.status_code == 202
    assert response.json() == {"runId": "fixed-run-id", "status": "pending"}
    batch = await http.post("/runs/batch", json={"flowId": flow_id,
                                                 "inputs": [{"x": 1}, {"x": 2}]})
    assert batch.status_code == 202
    assert len(batch.json()["runIds"]) == 2 and batch.json()["batchId"]
    inline = await http.post("/runs", json={"flowId": flow_id, "input": [{"x": 3}],
                                            "batch": True})
    assert inline.status_code == 202 and len(inline.json()["runIds"]) == 1
    metrics = (await http.get("/metrics")).text
    assert "stepflow_gateway_runs_submitted_total 4" in metrics
    assert ('stepflow_gateway_requests_total{method="POST",route="/api/v1/runs",'
            'status="202"} 2') in metrics


async def test_bad_run_requests_name_the_field(http: httpx.AsyncClient) -> None:
    flow_id = await _flow_id(http)
    bad = await http.post("/runs", content=b'{"flowId": ', headers={"content-type":
                                                                       "application/json"})
    assert _error(bad, 400, "not valid JSON") == "INVALID_ARGUMENT"
    _error(await http.post("/runs", json=[1]), 400, "JSON object", "an array")
    _error(await http.post("/runs", json={"flowId": 5}), 400, "'flowId'", "a string",
           "a number")
    _error(await http.post("/runs", json={"input": {}}), 400, "'flowId'", "required")
    _error(await http.post("/runs", json={"flowId": flow_id, "wait": "yes"}), 400, "'wait'",
           "a boolean")
    _error(await http.post("/runs", json={"flowId": flow_id, "variables": [1]}), 400,
           "'variables'", "an object")
    _error(await http.post("/runs", json={"flowId": flow_id, "timeoutSeconds": -1}), 400,
           "'timeoutSeconds'")
    _error(await http.post("/runs", json={"flowId": flow_id, "inptu": {}}), 400,
           "unknown field 'inptu'")
    _error(await http.post("/runs", json={"flowId": flow_id, "input": {"x": "one"}}), 400,
           "'input.x'")
    _error(await http.post("/runs/batch", json={"flowId": flow_id,
                                                "inputs": [{"x": 1}, {"x": "two"}]}),
           400, "'inputs[1].x'")
    _error(await http.post("/runs", json={"flowId": flow_id, "input": {}, "batch": True}),
           400, "'input'", "array")
    missing = await http.post("/runs", json={"flowId": "0" * 64, "input": {}})
    assert _error(missing, 404, "'flowId'", "0" * 64) == "NOT_FOUND"


async def test_oversized_bodies_are_refused(http: httpx.AsyncClient) -> None:
    big = {"data": "x" * 5000}
    assert _error(await http.post("/blobs", json=big), 413, "4096",
                  "maxBodyBytes") == "PAYLOAD_TOO_LARGE"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(5):
            yield b" " * 1000
        yield b"{}"

    _error(await http.post("/flows", content=chunks()), 413, "4096")


async def test_tokens_are_required_except_for_health(http: httpx.AsyncClient) -> None:
    none = await http.get("/runs", headers={"Authorization": ""})
    assert _error(none, 401, "Authorization") == "UNAUTHENTICATED"
    assert none.headers["www-authenticate"].startswith("Bearer")
    _error(await http.get("/runs", headers={"Authorization": "Bearer wrong"}), 401,
           "not valid")
    _error(await http.get("/runs", headers={"Authorization": "Basic abc"}), 401, "Bearer")
    health = await http.get("/health", headers={"Authorization": ""})
    assert health.status_code == 200
    assert health.json()["checks"] == {"postgres": "ok", "kafka": "ok"}
    assert health.json()["instanceId"]


async def test_run_queries_are_checked(http: httpx.AsyncClient) -> None:
    _error(await http.get("/runs", params={"status": "done"}), 400, "'status'", "'done'")
    _error(await http.get("/runs", params={"limit": "0"}), 400, "'limit'")
    _error(await http.get("/runs", params={"pageToken": "garbage"}), 400, "'pageToken'")
    _error(await http.get("/runs", params={"state": "x"}), 400, "'state'")
    _error(await http.get("/runs/no-such-run"), 404, "no-such-run")
    _error(await http.post("/runs/no-such-run/cancel"), 404, "no-such-run")
    listed = await http.get("/runs", params={"limit": "5"})
    assert listed.status_code == 200 and "runs" in listed.json()


async def test_blobs_round_trip(http: httpx.AsyncClient) -> None:
    stored = await http.post("/blobs", json={"data": {"k": [1, 2]}, "blobType": "data"})
    assert stored.status_code == 200
    blob_id = stored.json()["blobId"]
    got = await http.get(f"/blobs/{blob_id}")
    assert got.json() == {"blobId": blob_id, "blobType": "data", "data": {"k": [1, 2]}}
    _error(await http.get("/blobs/nope"), 404, "'nope'")
    _error(await http.post("/blobs", json={"blobType": "data"}), 400, "'data'", "required")


async def test_unknown_paths_and_methods_are_json_errors(http: httpx.AsyncClient) -> None:
    assert _error(await http.get("/nothing-here"), 404) == "NOT_FOUND"
    assert _error(await http.delete("/flows"), 405) == "METHOD_NOT_ALLOWED"


async def test_components_come_from_the_config(http: httpx.AsyncClient) -> None:
    routes = (await http.get("/components")).json()["routes"]
    assert routes[0]["route"] == "/builtin/{*component}"
    rule = routes[0]["rules"][0]
    assert rule["plugin"] == "builtin" and rule["pluginType"] == "builtin"
    assert "/sleep" in rule["components"]


async def test_the_openapi_document_describes_exactly_the_served_routes(
    http: httpx.AsyncClient, standalone_config: Path
) -> None:
    document = (await http.get("/openapi.json")).json()
    config = load_config(standalone_config, os.environ)
    app = create_app(config, distributed_options(config))
    served = {(method.lower(), route.path) for route in app.routes if isinstance(route, Route)
              for method in (route.methods or ()) if method != "HEAD"}
    documented = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert documented == served
    described = {(method.lower(), path) for method, path in OPERATIONS}
    assert served <= described, served - described
    assert document["paths"]["/api/v1/health"]["get"]["security"] == []

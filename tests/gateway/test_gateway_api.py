"""The API in front of a deployment without agents (real Kafka and PostgreSQL, the app over
httpx's ASGI transport): flows, blobs, components, health, metrics, OpenAPI, and every kind of
bad request answered with a 4xx and JSON naming the field."""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from gateway_support import auth
from starlette.requests import Request
from starlette.routing import Route

from gateway.api_errors import ApiError, Body, read_json
from gateway.app import create_app
from gateway.batch_events import batch_event_routes
from gateway.events import event_routes, serving_events
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


# Regressions found by tests/gateway/test_gateway_schemathesis.py (or while making the OpenAPI
# document precise for it): each was a 500 or an answer the document did not describe.


@pytest.fixture
async def events_http(standalone_config: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its event streams, as the ``gateway`` command serves it."""
    config = load_config(standalone_config, os.environ)
    app = create_app(config, distributed_options(config),
                     settings=gateway_settings(standalone_config, os.environ),
                     extra_routes=[*event_routes(ping_s=1), *batch_event_routes(ping_s=1)],
                     lifespans=[serving_events])
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw/api/v1",
                                     headers=auth("admin")) as client:
            yield client


async def test_a_wrong_method_on_runs_allows_both_of_its_methods(
    http: httpx.AsyncClient,
) -> None:
    for method in ("OPTIONS", "DELETE"):
        response = await http.request(method, "/runs")
        assert _error(response, 405) == "METHOD_NOT_ALLOWED"
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert {"GET", "POST"} <= allowed, allowed


async def test_null_is_no_value_of_a_typed_field(http: httpx.AsyncClient) -> None:
    flow_id = await _flow_id(http)
    _error(await http.post("/blobs", json={"data": 1, "blobType": None}), 400, "'blobType'",
           "null")
    for field in ("timeoutSeconds", "wait", "runId", "variables", "batch"):
        _error(await http.post("/runs", json={"flowId": flow_id, field: None}), 400,
               f"'{field}'", "null")
    _error(await http.post("/flows", json={"flow": None}), 400, "'flow'", "null")


async def test_ids_the_client_chooses_are_checked(http: httpx.AsyncClient) -> None:
    flow_id = await _flow_id(http)
    for run_id in ("", "a\nb", "a\u0000b", "x" * 257):
        _error(await http.post("/runs", json={"flowId": flow_id, "runId": run_id}), 400,
               "'runId'")
    _error(await http.post("/blobs", json={"data": 1, "blobType": "a\u0000"}), 400,
           "'blobType'", "control character")


async def test_flow_ids_are_content_hashes(http: httpx.AsyncClient) -> None:
    _error(await http.post("/runs", json={"flowId": "nope"}), 400, "'flowId'", "64")
    _error(await http.post("/runs/batch", json={"flowId": "NOPE", "inputs": [1]}), 400,
           "'flowId'", "hex")
    _error(await http.get("/runs", params={"flowId": "nope"}), 400, "'flowId'")
    _error(await http.get("/runs", params={"batchId": ""}), 400, "'batchId'")
    _error(await http.get("/flows/nope"), 404, "nope")


async def test_ids_postgresql_cannot_hold_are_not_found(
    http: httpx.AsyncClient, events_http: httpx.AsyncClient,
) -> None:
    for path in ("/runs/a%00b", "/flows/a%00b", "/blobs/a%00b"):
        _error(await http.get(path), 404)
    _error(await http.post("/runs/a%00b/cancel"), 404)
    listed = await http.get("/runs", params={"batchId": "a\u0000b"})
    assert listed.status_code == 200 and listed.json() == {"runs": []}
    _error(await events_http.get("/runs/a%00b/events"), 404)
    _error(await events_http.get("/batches/a%00b/events"), 404)


async def test_json_that_cannot_be_stored_or_answered_is_refused(
    http: httpx.AsyncClient,
) -> None:
    headers = {"content-type": "application/json"}
    for raw, words in ((b'{"data": NaN}', ("NaN",)), (b'{"data": -Infinity}', ("-Infinity",)),
                       (b'{"data": 1e400}', ("1e400", "too large")),
                       (b'{"data": "a\\ud800b"}', ("surrogate",))):
        _error(await http.post("/blobs", content=raw, headers=headers), 400, *words)
    paired = await http.post("/blobs", content=b'{"data": "\\ud83d\\ude00"}', headers=headers)
    assert paired.status_code == 200, paired.text


async def test_an_integer_past_pythons_digit_limit_is_refused() -> None:
    raw = b'{"data": ' + b"7" * 4400 + b"}"  # larger than the fixture's body limit

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": raw, "more_body": False}

    request = Request({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)
    with pytest.raises(ApiError) as refused:
        await read_json(request, 1 << 20)
    assert refused.value.status == 400 and "not valid JSON" in refused.value.message


async def test_list_queries_that_crashed_are_refused(http: httpx.AsyncClient) -> None:
    _error(await http.get("/runs", params={"limit": "\u00b2"}), 400, "'limit'")
    for value in ([10**30, "x"], [1, "a\u0000b"], [1, "\ud800"], [True, "x"]):
        raw = json.dumps(value).encode()
        token = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        _error(await http.get("/runs", params={"pageToken": token}), 400, "'pageToken'")
    _error(await http.get("/runs?status=running&status=failed"), 400, "'status'",
           "more than once")


def test_a_timeout_past_any_double_waits_as_long_as_allowed() -> None:
    assert Body({"timeoutSeconds": 10**400}, ("timeoutSeconds",)).number(
        "timeoutSeconds") == math.inf


async def test_a_flow_stored_as_a_plain_blob_is_that_flow(http: httpx.AsyncClient) -> None:
    document = {**FLOW, "name": "stored_as_data"}
    stored = await http.post("/blobs", json={"data": document})
    flow_id = stored.json()["blobId"]
    got = await http.get(f"/flows/{flow_id}")
    assert got.status_code == 200, got.text
    assert got.json() == {"flowId": flow_id, "flow": document}
    not_a_flow = await http.post("/blobs", json={"data": {"steps": 5}, "blobType": "flow"})
    _error(await http.get(f"/flows/{not_a_flow.json()['blobId']}"), 404, "no flow")


async def test_event_stream_positions_are_checked_both_ways(
    events_http: httpx.AsyncClient,
) -> None:
    for params, headers, field in (({"since": str(2**63)}, {}, "'since'"),
                                   ({"since": "1_000"}, {}, "'since'"),
                                   ({"since": "1.5"}, {"Last-Event-ID": "3"}, "'since'"),
                                   ({}, {"Last-Event-ID": "+3"}, "'Last-Event-ID'")):
        response = await events_http.get("/runs/some-run/events", params=params,
                                         headers=headers)
        _error(response, 400, field)

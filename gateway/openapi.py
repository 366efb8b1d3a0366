"""The OpenAPI 3.1 document of the API, made from the app's routes.

Each operation is described here by hand; the paths and methods come from the routes the app
actually has, so the document lists no route the app lacks. A route without a description
here still appears (with its summary only), and a test checks that none does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Route

__all__ = ["OPERATIONS", "openapi_document"]

_ERROR = {"$ref": "#/components/schemas/Error"}
_ANY: dict[str, Any] = {}
_OBJECT = {"type": "object"}
_STRING = {"type": "string"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, **(_json(schema) if schema is not None else {})}


def _object(required: Sequence[str], **properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": properties,
            "additionalProperties": False}


_ERRORS = {
    "400": _answer("Malformed JSON, a wrong type or a missing field (the message names it)",
                   _ERROR),
    "401": _answer("Missing or invalid bearer token", _ERROR),
    "404": _answer("Unknown id", _ERROR),
    "413": _answer("Body larger than gateway.maxBodyBytes", _ERROR),
}
_SUBMITTED = _object(["runId", "status"], runId=_STRING, status=_STRING,
                     result={"$ref": "#/components/schemas/FlowResult"})
_BATCH = _object(["batchId", "runIds"], batchId=_STRING,
                 runIds={"type": "array", "items": _STRING},
                 results={"type": "array", "items": {"oneOf": [
                     {"$ref": "#/components/schemas/FlowResult"}, {"type": "null"}]}})
_WAIT = {"wait": {"type": "boolean", "description": "wait for the result(s)"},
         "timeoutSeconds": {"type": "number", "description":
                            "longest wait (capped by gateway.waitTimeoutSeconds)"}}

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/v1/flows"): {
        "summary": "Check a flow and store it; its id is the hash of its document",
        "requestBody": _json(_object(["flow"], flow=_OBJECT)),
        "responses": {"200": _answer("Stored", _object(
            ["flowId"], flowId=_STRING, warnings={"type": "array", "items": _STRING}))},
    },
    ("GET", "/api/v1/flows/{flow_id}"): {
        "summary": "A stored flow",
        "responses": {"200": _answer("The flow", _object(["flowId", "flow"], flowId=_STRING,
                                                         flow=_OBJECT))},
    },
    ("POST", "/api/v1/runs"): {
        "summary": "Submit a run (or, with batch: true and an array input, a batch)",
        "requestBody": _json(_object(
            ["flowId"], flowId=_STRING, input=_ANY, variables=_OBJECT, runId=_STRING,
            batch={"type": "boolean"}, **_WAIT)),
        "responses": {"200": _answer("Ended (wait: true)", _SUBMITTED),
                      "202": _answer("Accepted, not ended", {"oneOf": [_SUBMITTED, _BATCH]}),
                      "409": _answer("runId taken by another tenant", _ERROR)},
    },
    ("GET", "/api/v1/runs"): {
        "summary": "Runs, newest first (a tenant's token sees its tenant's runs only)",
        "parameters": [
            {"name": name, "in": "query", "required": False, "schema": schema}
            for name, schema in (("status", {"enum": ["pending", "running", "completed",
                                                      "failed", "cancelled"]}),
                                 ("flowId", _STRING), ("batchId", _STRING),
                                 ("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                                 ("pageToken", _STRING))
        ],
        "responses": {"200": _answer("A page of runs", _object(
            ["runs"], runs={"type": "array", "items": {"$ref": "#/components/schemas/Run"}},
            nextPageToken=_STRING))},
    },
    ("POST", "/api/v1/runs/batch"): {
        "summary": "Submit one run per input",
        "requestBody": _json(_object(["flowId", "inputs"], flowId=_STRING,
                                     inputs={"type": "array"}, variables=_OBJECT, **_WAIT)),
        "responses": {"200": _answer("All ended (wait: true)", _BATCH),
                      "202": _answer("Accepted", _BATCH)},
    },
    ("GET", "/api/v1/runs/{run_id}"): {
        "summary": "A run: status, times, input, redacted variables, result, step statuses",
        "responses": {"200": _answer("The run", {"$ref": "#/components/schemas/RunDetail"})},
    },
    ("POST", "/api/v1/runs/{run_id}/cancel"): {
        "summary": "Ask for a run to be cancelled",
        "responses": {"202": _answer("Cancel requested", _object(["runId", "status"],
                                                                 runId=_STRING, status=_STRING)),
                      "409": _answer("The run has already ended", _ERROR)},
    },
    ("GET", "/api/v1/runs/{run_id}/events"): {
        "summary": "The run's events as Server-Sent Events (id = seq); resume with "
                   "Last-Event-ID or ?since=SEQ",
        "parameters": [{"name": "since", "in": "query", "required": False,
                        "schema": {"type": "integer"}}],
        "responses": {"200": {"description": "An event stream",
                              "content": {"text/event-stream": {"schema": _STRING}}}},
    },
    ("GET", "/api/v1/batches/{batch_id}/events"): {
        "summary": "A batch's results as Server-Sent Events, as its runs finish: 'result' "
                   "(id = batch index), 'progress', and 'BatchFinished' last",
        "responses": {"200": {"description": "An event stream",
                              "content": {"text/event-stream": {"schema": _STRING}}},
                      "404": _answer("No such batch", _ERROR)},
    },
    ("POST", "/api/v1/blobs"): {
        "summary": "Store a JSON blob",
        "requestBody": _json(_object(["data"], data=_ANY, blobType=_STRING)),
        "responses": {"200": _answer("Stored", _object(["blobId", "blobType"], blobId=_STRING,
                                                       blobType=_STRING))},
    },
    ("GET", "/api/v1/blobs/{blob_id}"): {
        "summary": "A stored blob",
        "responses": {"200": _answer("The blob", _object(
            ["blobId", "blobType", "data"], blobId=_STRING, blobType=_STRING, data=_ANY))},
    },
    ("GET", "/api/v1/components"): {
        "summary": "The config's routes and plugins, with the components local plugins offer",
        "responses": {"200": _answer("Routes", _object(["routes"], routes={"type": "array"}))},
    },
    ("GET", "/api/v1/health"): {
        "summary": "Whether PostgreSQL and Kafka answer (no token needed)",
        "security": [],
        "responses": {
            "200": _answer("Healthy", _object(["status", "instanceId", "checks"],
                                              status=_STRING, instanceId=_STRING,
                                              checks=_OBJECT)),
            "503": _answer("A dependency does not answer", _OBJECT),
        },
    },
    ("GET", "/api/v1/metrics"): {
        "summary": "Prometheus metrics: requests by route and status, runs submitted",
        "responses": {"200": {"description": "Prometheus text",
                              "content": {"text/plain": {"schema": _STRING}}}},
    },
    ("GET", "/api/v1/openapi.json"): {
        "summary": "This document",
        "responses": {"200": _answer("OpenAPI 3.1", _OBJECT)},
    },
}

_SCHEMAS: dict[str, Any] = {
    "Error": _object(["code", "message"], code=_STRING, message=_STRING),
    "FlowResult": {"type": "object", "description": "Stepflow's FlowResult: "
                   "{outcome: success, result} or {outcome: failed, error: {code, message}}"},
    "Run": _object(["runId", "flowId", "status", "createdAt"], runId=_STRING, flowId=_STRING,
                   status=_STRING, createdAt={"type": "integer"},
                   finishedAt={"type": ["integer", "null"]},
                   batchId={"type": ["string", "null"]},
                   batchIndex={"type": ["integer", "null"]}),
    "RunDetail": {"type": "object", "description": "A Run, with parentRunId, input, "
                  "variables (secrets redacted), result and steps "
                  "[{stepId, status, attempt, component, startedAt, finishedAt, error?, "
                  "skipReason?}]"},
}


def openapi_document(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """The document for ``routes``: every method of every route, in route order."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route):
            continue
        path = route.path
        for method in sorted(set(route.methods or ()) - {"HEAD"}):
            operation = dict(OPERATIONS.get((method, path), {"summary": path,
                                                             "responses": {}}))
            operation["responses"] = {**operation["responses"], **_ERRORS}
            params = [{"name": name, "in": "path", "required": True, "schema": _STRING}
                      for name in route.param_convertors]
            if params:
                operation["parameters"] = [*params, *operation.get("parameters", [])]
            paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "stepflow-stream gateway", "version": "1"},
        "components": {"schemas": _SCHEMAS, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }

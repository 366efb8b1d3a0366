"""The OpenAPI 3.1 document of the API, made from the app's routes.

Each operation is described here by hand; the paths and methods come from the routes the app
actually has, so the document lists no route the app lacks. A route without a description
here still appears (with its summary only), and a test checks that none does. The error
answers an operation can give follow from what it takes: 401 unless it is open, 400 when it
reads a body, a query or a header, 413 with a body, 404 with a path parameter; an operation
adds its own (409, 503) to those. ``tests/gateway/test_gateway_schemathesis.py`` holds the
live app to this document with generated requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Route

from gateway.api_errors import ERROR_CODES, NAME_MAX_LENGTH, NAME_PATTERN
from stepflow_stream.core.events import EVENT_TYPES
from stepflow_stream.core.state import RunStatus, StepStatus

__all__ = ["OPERATIONS", "openapi_document"]

JSONSchema = dict[str, Any]

_ERROR: JSONSchema = {"$ref": "#/components/schemas/Error"}
_FLOW_RESULT: JSONSchema = {"$ref": "#/components/schemas/FlowResult"}
_ANY: JSONSchema = {"description": "any JSON value"}
_STRING: JSONSchema = {"type": "string"}
_MILLIS: JSONSchema = {"type": "integer", "description": "milliseconds since the Unix epoch"}
_OPTIONAL_MILLIS: JSONSchema = {"type": ["integer", "null"],
                                "description": "milliseconds since the Unix epoch"}
_HASH_PATTERN = "^[0-9a-f]{64}$"
_FLOW_ID: JSONSchema = {"type": "string", "pattern": _HASH_PATTERN,
                        "description": "a flow's id: the SHA-256 (hex) of its document"}
_BLOB_ID: JSONSchema = {"type": "string", "pattern": _HASH_PATTERN,
                        "description": "a blob's id: the SHA-256 (hex) of its compact JSON"}
_NAME: JSONSchema = {"type": "string", "minLength": 1, "maxLength": NAME_MAX_LENGTH,
                     "pattern": NAME_PATTERN}
# Ids as they are found: runs and batches may come from elsewhere (the CLI), with longer ids.
_RUN_ID: JSONSchema = {"type": "string", "minLength": 1, "description": "a run's id"}
_BATCH_ID: JSONSchema = {"type": "string", "minLength": 1, "description": "a batch's id"}
_NEW_RUN_ID: JSONSchema = {**_NAME, "description": "the id of the new run (default: a "
                           "random one); a run id given again starts nothing new"}
_RUN_STATUS: JSONSchema = {"type": "string", "enum": [s.value for s in RunStatus]}
_ENDED_STATUS: JSONSchema = {"type": "string", "enum": [s.value for s in RunStatus
                                                         if s.terminal]}
_TIMEOUT: JSONSchema = {"type": "number", "exclusiveMinimum": 0, "description":
                        "the longest to wait, in seconds (capped by gateway.waitTimeoutSeconds)"}
_WAIT: JSONSchema = {"type": "boolean", "description": "wait for the result(s)"}
_FLOW_DOCUMENT: JSONSchema = {
    "type": "object",
    "description": "a Stepflow flow document (https://stepflow.org/schemas/v1/flow.json); "
                   "its steps, references and routes are checked as the cluster would",
}
# Path parameters, by name: the same name means the same thing in every path.
_PATH_PARAMETERS: dict[str, JSONSchema] = {
    "flow_id": _FLOW_ID, "blob_id": _BLOB_ID, "run_id": _RUN_ID, "batch_id": _BATCH_ID,
}


def _json(schema: JSONSchema) -> JSONSchema:
    return {"content": {"application/json": {"schema": schema}}}


def _body(schema: JSONSchema) -> JSONSchema:
    return {"required": True, **_json(schema)}


def _answer(description: str, schema: JSONSchema | None = None) -> JSONSchema:
    return {"description": description, **(_json(schema) if schema is not None else {})}


def _object(required: Sequence[str], **properties: JSONSchema) -> JSONSchema:
    return {"type": "object", "required": list(required), "properties": properties,
            "additionalProperties": False}


def _array(items: JSONSchema, **limits: int) -> JSONSchema:
    return {"type": "array", "items": items, **limits}


def _query(name: str, schema: JSONSchema, description: str) -> JSONSchema:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


def _event(names: Sequence[str], data: JSONSchema, *, with_id: bool) -> JSONSchema:
    """One Server-Sent Event: its ``event`` name, ``id`` and JSON ``data``."""
    return {"type": "object", "required": ["event", "data", *(["id"] if with_id else [])],
            "properties": {"event": {"type": "string", "enum": list(names)},
                           "id": {"type": "string", "pattern": "^[0-9]+$"},
                           "data": {"type": "string", "contentMediaType": "application/json",
                                    "contentSchema": data}}}


def _event_stream(event: JSONSchema) -> JSONSchema:
    # Before OpenAPI 3.2's itemSchema, the schema of an event stream describes each event.
    return {"text/event-stream": {"schema": event}}


_RUN_EVENT = _event(
    [kind.__name__ for kind in EVENT_TYPES],
    {"type": "object", "required": ["type", "run_id", "seq", "timestamp"],
     "properties": {"type": {"type": "string", "enum": [kind.__name__ for kind in EVENT_TYPES]},
                    "run_id": _STRING, "seq": {"type": "integer", "minimum": 0},
                    "timestamp": _MILLIS},
     "description": "the journal event, its fields as in the journal"},
    with_id=True)
_PROGRESS = {"type": "object", "required": ["size", "done", "failed"],
             "properties": {"size": {"type": "integer", "minimum": 1},
                            "done": {"type": "integer", "minimum": 0},
                            "failed": {"type": "integer", "minimum": 0}}}
_BATCH_EVENT: JSONSchema = {"oneOf": [
    _event(["result"], {"type": "object", "required": ["runId", "batchIndex", "status", "result"],
                        "properties": {"runId": _STRING,
                                       "batchIndex": {"type": "integer", "minimum": 0},
                                       "status": _ENDED_STATUS,
                                       "result": {"oneOf": [_FLOW_RESULT, {"type": "null"}]}}},
           with_id=True),
    _event(["progress", "BatchFinished"], _PROGRESS, with_id=False),
]}
_ACCEPTED = _object(["runId", "status"], runId=_RUN_ID, status=_RUN_STATUS)
_ENDED = _object(["runId", "status", "result"], runId=_RUN_ID, status=_ENDED_STATUS,
                 result=_FLOW_RESULT)
_BATCH = _object(
    ["batchId", "runIds"], batchId=_BATCH_ID, runIds=_array(_RUN_ID, minItems=1),
    results={**_array({"oneOf": [_FLOW_RESULT, {"type": "null"}]}, minItems=1),
             "description": "with wait: each run's result in input order, null for one "
                            "still running"})
_RUN_FIELDS: dict[str, JSONSchema] = {
    "runId": _RUN_ID, "flowId": _FLOW_ID, "status": _RUN_STATUS, "createdAt": _MILLIS,
    "finishedAt": _OPTIONAL_MILLIS, "batchId": {"type": ["string", "null"]},
    "batchIndex": {"type": ["integer", "null"], "minimum": 0},
}
_STEP = _object(
    ["stepId", "status", "attempt", "component", "startedAt", "finishedAt"],
    stepId=_STRING, status={"type": "string", "enum": [s.value for s in StepStatus]},
    attempt={"type": "integer", "minimum": 0},
    component={"type": ["string", "null"]}, startedAt=_OPTIONAL_MILLIS,
    finishedAt=_OPTIONAL_MILLIS, error={"$ref": "#/components/schemas/ErrorInfo"},
    skipReason=_STRING)


OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/v1/flows"): {
        "summary": "Check a flow and store it; its id is the hash of its document",
        "requestBody": _body(_object(["flow"], flow=_FLOW_DOCUMENT)),
        "responses": {"200": _answer("Stored", _object(
            ["flowId", "warnings"], flowId=_FLOW_ID, warnings=_array(_STRING)))},
    },
    ("GET", "/api/v1/flows/{flow_id}"): {
        "summary": "A stored flow",
        "responses": {"200": _answer("The flow", _object(["flowId", "flow"], flowId=_FLOW_ID,
                                                         flow=_FLOW_DOCUMENT))},
    },
    ("POST", "/api/v1/runs"): {
        "summary": "Submit a run (or, with batch: true and an array input, a batch)",
        "requestBody": _body({
            **_object(["flowId"], flowId=_FLOW_ID,
                      input={**_ANY, "description": "the flow's input; absent or null: {}"},
                      variables={"type": "object"}, runId=_NEW_RUN_ID,
                      batch={"type": "boolean"},
                      wait=_WAIT, timeoutSeconds=_TIMEOUT),
            # A batch's input is the array of its runs' inputs, and it names no run.
            "if": {"required": ["batch"], "properties": {"batch": {"const": True}}},
            "then": {"required": ["input"], "properties": {"input": {"type": "array",
                                                                     "minItems": 1}},
                     "not": {"required": ["runId"]}},
        }),
        "responses": {"200": _answer("Ended (wait: true)", {"oneOf": [_ENDED, _BATCH]}),
                      "202": _answer("Accepted, not ended", {"oneOf": [_ACCEPTED, _BATCH]}),
                      "404": _answer("No flow with that flowId", _ERROR),
                      "409": _answer("runId taken by another tenant", _ERROR),
                      "503": _answer("Kafka cannot be reached", _ERROR)},
    },
    ("GET", "/api/v1/runs"): {
        "summary": "Runs, newest first (a tenant's token sees its tenant's runs only)",
        "parameters": [
            _query("status", _RUN_STATUS, "only runs in this status"),
            _query("flowId", _FLOW_ID, "only runs of this flow"),
            _query("batchId", _BATCH_ID, "only runs of this batch"),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000},
                   "runs per page (default 50)"),
            _query("pageToken", {"type": "string", "pattern": "^[A-Za-z0-9_-]*$"},
                   "the nextPageToken of the page before; empty or absent: the first page"),
        ],
        "responses": {"200": _answer("A page of runs", _object(
            ["runs"], runs=_array({"$ref": "#/components/schemas/Run"}),
            nextPageToken={"type": "string", "pattern": "^[A-Za-z0-9_-]+$",
                           "description": "present when there are more runs"}))},
    },
    ("POST", "/api/v1/runs/batch"): {
        "summary": "Submit one run per input",
        "requestBody": _body(_object(["flowId", "inputs"], flowId=_FLOW_ID,
                                     inputs=_array(_ANY, minItems=1),
                                     variables={"type": "object"}, wait=_WAIT,
                                     timeoutSeconds=_TIMEOUT)),
        "responses": {"200": _answer("All ended (wait: true)", _BATCH),
                      "202": _answer("Accepted", _BATCH),
                      "404": _answer("No flow with that flowId", _ERROR),
                      "409": _answer("A run id taken by another tenant", _ERROR),
                      "503": _answer("Kafka cannot be reached", _ERROR)},
    },
    ("GET", "/api/v1/runs/{run_id}"): {
        "summary": "A run: status, times, input, redacted variables, result, step statuses",
        "responses": {"200": _answer("The run", {"$ref": "#/components/schemas/RunDetail"})},
    },
    ("POST", "/api/v1/runs/{run_id}/cancel"): {
        "summary": "Ask for a run to be cancelled",
        "responses": {"202": _answer("Cancel requested", _object(
                          ["runId", "status"], runId=_RUN_ID,
                          status={"type": "string", "const": "cancelling"})),
                      "409": _answer("The run has already ended", _ERROR),
                      "503": _answer("Kafka cannot be reached", _ERROR)},
    },
    ("GET", "/api/v1/runs/{run_id}/state"): {
        "summary": "The run's state folded from its journal up to event 'at' (default: the "
                   "last): status, input, result, and each step's status, input and output",
        "parameters": [_query("at", {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                              "the seq of the last event to fold")],
        "responses": {"200": _answer("The state", _object(
            ["runId", "flowId", "at", "lastSeq", "parentRunId", "forkedFromStep", "status",
             "input", "steps"],
            runId=_RUN_ID, flowId=_FLOW_ID, at={"type": "integer", "minimum": 0},
            lastSeq={"type": "integer", "minimum": 0},
            parentRunId={"type": ["string", "null"]},
            forkedFromStep={"type": ["string", "null"],
                            "description": "in a fork: the step it runs again from"},
            status=_RUN_STATUS, input=_ANY, result=_FLOW_RESULT,
            cancelRequested={"type": "boolean"},
            steps={"type": "object", "description": "the steps needed by then, by id",
                   "additionalProperties": _object(
                       ["status", "attempt"],
                       status={"type": "string", "enum": [s.value for s in StepStatus]},
                       attempt={"type": "integer", "minimum": 0}, component=_STRING,
                       input=_ANY, output=_ANY, error={"$ref": "#/components/schemas/ErrorInfo"},
                       skipReason=_STRING, fromDefault={"type": "boolean"},
                       reusedFrom={**_STRING, "description": "in a fork: the run whose "
                                   "recorded output the step took"})}))},
    },
    ("POST", "/api/v1/runs/{run_id}/fork"): {
        "summary": "Start a run again from a step: the steps that do not read fromStep keep "
                   "the run's recorded outputs (their components are not called), the others "
                   "run again; input replaces the run's input",
        "requestBody": _body(_object(["fromStep"], fromStep=_STRING, input=_ANY)),
        "responses": {"202": _answer("The fork is accepted", _object(
                          ["runId", "parentRunId", "fromStep", "status", "reusedSteps",
                           "rerunSteps"],
                          runId=_RUN_ID, parentRunId=_RUN_ID, fromStep=_STRING,
                          status=_RUN_STATUS, reusedSteps=_array(_STRING),
                          rerunSteps=_array(_STRING))),
                      "409": _answer("The run cannot be forked (its flow is not stored)",
                                     _ERROR),
                      "503": _answer("Kafka cannot be reached", _ERROR)},
    },
    ("GET", "/api/v1/runs/{run_id}/events"): {
        "summary": "The run's events as Server-Sent Events (id = seq); resume with "
                   "Last-Event-ID or ?since=SEQ",
        "parameters": [
            _query("since", {"type": "integer", "maximum": 2**63 - 1},
                   "the seq of the last event received: the stream starts after it"),
            {"name": "Last-Event-ID", "in": "header", "required": False,
             "schema": {"type": "string", "pattern": "^(-?[0-9]{1,20})?$"},
             "description": "as since (an EventSource sends it when it reconnects); "
                            "it wins over since"},
        ],
        "responses": {"200": {"description": "An event stream, ending after the run's "
                                             "terminal event",
                              "content": _event_stream(_RUN_EVENT)},
                      "204": {"description": "The run has ended and the client has every "
                                             "event (an EventSource then stops reconnecting)"}},
    },
    ("GET", "/api/v1/batches/{batch_id}/events"): {
        "summary": "A batch's results as Server-Sent Events, as its runs finish: 'result' "
                   "(id = batch index), 'progress', and 'BatchFinished' last",
        "responses": {"200": {"description": "An event stream",
                              "content": _event_stream(_BATCH_EVENT)},
                      "404": _answer("No such batch", _ERROR)},
    },
    ("POST", "/api/v1/blobs"): {
        "summary": "Store a JSON blob",
        "requestBody": _body(_object(["data"], data=_ANY,
                                     blobType={**_NAME, "default": "data"})),
        "responses": {"200": _answer("Stored", _object(["blobId", "blobType"], blobId=_BLOB_ID,
                                                       blobType=_NAME))},
    },
    ("GET", "/api/v1/blobs/{blob_id}"): {
        "summary": "A stored blob",
        "responses": {"200": _answer("The blob", _object(
            ["blobId", "blobType", "data"], blobId=_BLOB_ID, blobType=_NAME, data=_ANY))},
    },
    ("GET", "/api/v1/components"): {
        "summary": "The config's routes and plugins, with the components local plugins offer",
        "responses": {"200": _answer("Routes", _object(["routes"], routes=_array(_object(
            ["route", "rules"], route=_STRING, rules=_array(_object(
                ["plugin", "pluginType"], plugin=_STRING, pluginType=_STRING,
                components={**_array(_STRING), "description": "for builtin and mock "
                            "plugins: the components the rule admits"}))))))},
    },
    ("GET", "/api/v1/health"): {
        "summary": "Whether PostgreSQL and Kafka answer (no token needed)",
        "security": [],
        "responses": {
            "200": _answer("Healthy", {"$ref": "#/components/schemas/Health"}),
            "503": _answer("A dependency does not answer",
                           {"$ref": "#/components/schemas/Health"}),
        },
    },
    ("GET", "/api/v1/metrics"): {
        "summary": "Prometheus metrics: requests by route and status, runs submitted",
        "responses": {"200": {"description": "Prometheus text",
                              "content": {"text/plain": {"schema": _STRING}}}},
    },
    ("GET", "/api/v1/openapi.json"): {
        "summary": "This document",
        "responses": {"200": _answer("OpenAPI 3.1", {
            "type": "object", "required": ["openapi", "info", "paths"],
            "properties": {"openapi": {"type": "string", "const": "3.1.0"}}})},
    },
}

_ERROR_INFO = {**_object(["code", "message"], code=_STRING, message=_STRING, data=_ANY),
               "description": "Stepflow's error: a code, a message and optional data"}

_SCHEMAS: dict[str, JSONSchema] = {
    "Error": {**_object(["code", "message"], code={"type": "string", "enum": ERROR_CODES},
                        message={"type": "string", "minLength": 1}),
              "description": "Every error answer: a stable code, and a message naming the "
                             "field or thing at fault"},
    "ErrorInfo": _ERROR_INFO,
    "FlowResult": {
        "description": "Stepflow's FlowResult",
        "oneOf": [_object(["outcome", "result"], outcome={"type": "string",
                                                          "const": "success"}, result=_ANY),
                  _object(["outcome", "error"], outcome={"type": "string", "const": "failed"},
                          error={"$ref": "#/components/schemas/ErrorInfo"})],
    },
    "Run": _object(list(_RUN_FIELDS), **_RUN_FIELDS),
    "RunDetail": {**_object(
        [*_RUN_FIELDS, "parentRunId", "input", "variables", "result", "steps"], **_RUN_FIELDS,
        parentRunId={"type": ["string", "null"]}, input=_ANY,
        variables={"type": "object", "description": "as recorded: secrets redacted"},
        result={"oneOf": [_FLOW_RESULT, {"type": "null"}]},
        steps={**_array(_STEP), "description": "the steps the run needed so far"}),
        "description": "A Run, with its input, variables, result and steps"},
    "Health": _object(["status", "instanceId", "checks"],
                      status={"type": "string", "enum": ["ok", "unavailable"]},
                      instanceId={"type": "string", "minLength": 1},
                      checks=_object(["postgres", "kafka"], postgres=_STRING, kafka=_STRING)),
}
_ANSWERS = {
    "400": _answer("Malformed JSON, a wrong type, a missing field or a bad parameter (the "
                   "message names it)", _ERROR),
    "401": _answer("Missing or invalid bearer token", _ERROR),
    "404": _answer("Unknown id", _ERROR),
    "413": _answer("Body larger than gateway.maxBodyBytes", _ERROR),
}


def _operation(method: str, route: Route) -> dict[str, Any]:
    operation = dict(OPERATIONS.get((method, route.path), {"summary": route.path,
                                                           "responses": {}}))
    params = [{"name": name, "in": "path", "required": True,
               "schema": _PATH_PARAMETERS.get(name, _STRING)}
              for name in route.param_convertors]
    if params:
        operation["parameters"] = [*params, *operation.get("parameters", [])]
    takes_input = "requestBody" in operation or any(
        param["in"] != "path" for param in operation.get("parameters", []))
    errors = []
    if operation.get("security") != []:
        errors.append("401")
    if takes_input:
        errors.append("400")
    if "requestBody" in operation:
        errors.append("413")
    if params:
        errors.append("404")
    operation["responses"] = {**{code: _ANSWERS[code] for code in errors},
                              **operation["responses"]}
    return operation


def openapi_document(routes: Sequence[BaseRoute]) -> dict[str, Any]:
    """The document for ``routes``: every method of every route, in route order."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if not isinstance(route, Route):
            continue
        for method in sorted(set(route.methods or ()) - {"HEAD"}):
            paths.setdefault(route.path, {})[method.lower()] = _operation(method, route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "stepflow-stream gateway", "version": "1"},
        "components": {"schemas": _SCHEMAS, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }

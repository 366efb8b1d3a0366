"""Runs: submit one or a batch (optionally waiting for results), list, get, cancel.

A run is *accepted* once its SubmitRun is on Kafka; it shows in the list and detail once the
orchestrator has projected its first event to PostgreSQL, a few milliseconds later. With
tenant tokens, each run's tenant is recorded before it is submitted, and a tenant sees only its
own runs (another tenant's run is "not found", as one that does not exist).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import re
import uuid
from collections.abc import Iterator, Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.api_errors import (
    CONTENT_ID,
    ApiError,
    Body,
    invalid,
    read_json,
    storable,
)
from gateway.api_state import GatewayState, gateway_state, visible_run
from gateway.auth import tenant_of
from stepflow_stream.cli.run import check_input
from stepflow_stream.core.events import FlowResult, RunCreated
from stepflow_stream.core.flow import Flow
from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.core.state import RunState, RunStatus, fold
from stepflow_stream.distributed.client import batch_run_id
from stepflow_stream.errors import InputError

__all__ = ["run_routes"]

_SUBMIT_FIELDS = ("flowId", "input", "variables", "wait", "runId", "batch", "timeoutSeconds")
_BATCH_FIELDS = ("flowId", "inputs", "variables", "wait", "timeoutSeconds")
_LIST_PARAMS = ("status", "flowId", "batchId", "limit", "pageToken")
_DEFAULT_LIMIT, _MAX_LIMIT = 50, 1000
_INT64 = range(-(2**63), 2**63)


async def submit_run(request: Request) -> Response:
    """One run, or, with ``batch: true`` and a list as ``input``, one run per item."""
    state = gateway_state(request)
    body = Body(await read_json(request, state.settings.max_body_bytes), _SUBMIT_FIELDS)
    flow = await state.flow(body.flow_id())
    variables = body.object("variables") or {}
    timeout = _wait_timeout(state, body)
    input_value = body.any("input")
    if body.boolean("batch"):
        if not isinstance(input_value, list):
            raise invalid("'input' is an array of inputs when 'batch' is true")
        if "runId" in body.value:
            raise invalid("'runId' names one run; a batch's run ids are chosen by the gateway")
        return await _submit_batch(request, state, flow, input_value, variables, timeout)
    input_value = {} if input_value is None else input_value
    _check_input(flow, input_value, "input")
    run_id = body.name("runId") or uuid.uuid4().hex
    await _claim(request, state, [run_id])
    with _as_bad_request():
        await state.client.submit(flow, input_value, variables, run_id=run_id)
    state.metrics.runs_submitted += 1
    if timeout is None:
        return JSONResponse({"runId": run_id, "status": RunStatus.PENDING.value},
                            status_code=202)
    try:
        result = await state.client.wait(run_id, timeout)
    except TimeoutError:
        summary = await state.client.journal.get_run(run_id)
        now = summary.status if summary is not None else RunStatus.PENDING
        return JSONResponse({"runId": run_id, "status": now.value}, status_code=202)
    summary = await state.client.journal.get_run(run_id)
    status = summary.status.value if summary is not None else _status_of(result)
    return JSONResponse({"runId": run_id, "status": status, "result": result.to_json()})


async def submit_batch(request: Request) -> Response:
    state = gateway_state(request)
    body = Body(await read_json(request, state.settings.max_body_bytes), _BATCH_FIELDS)
    flow = await state.flow(body.flow_id())
    inputs = body.array("inputs", required=True)
    assert inputs is not None
    return await _submit_batch(request, state, flow, inputs, body.object("variables") or {},
                               _wait_timeout(state, body))


async def _submit_batch(request: Request, state: GatewayState, flow: Flow, inputs: list[JSON],
                        variables: JSONObject, timeout: float | None) -> Response:
    if not inputs:
        raise invalid("a batch has at least one input")
    for index, item in enumerate(inputs):
        _check_input(flow, item, f"inputs[{index}]")
    batch_id = uuid.uuid4().hex
    run_ids = [batch_run_id(batch_id, index) for index in range(len(inputs))]
    await _claim(request, state, run_ids)
    with _as_bad_request():
        await state.client.submit_many(flow, inputs, variables, batch_id=batch_id)
    state.metrics.runs_submitted += len(run_ids)
    answer: JSONObject = {"batchId": batch_id, "runIds": run_ids}
    if timeout is None:
        return JSONResponse(answer, status_code=202)
    results = await _wait_all(state, run_ids, timeout)
    answer["results"] = [r.to_json() if r is not None else None for r in results]
    done = all(r is not None for r in results)
    return JSONResponse(answer, status_code=200 if done else 202)


async def _wait_all(state: GatewayState, run_ids: Sequence[str],
                    timeout: float) -> list[FlowResult | None]:
    """The runs' results, None for those still running after ``timeout`` seconds."""
    tasks = [asyncio.ensure_future(state.client.wait(run_id)) for run_id in run_ids]
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return [task.result() if task not in pending else None for task in tasks]


async def list_runs(request: Request) -> Response:
    """The newest runs first, ``limit`` a page, filtered by status, flow and batch."""
    state = gateway_state(request)
    params = request.query_params
    for name in params:
        if name not in _LIST_PARAMS:
            raise invalid(f"unknown query parameter '{name}'; known: {', '.join(_LIST_PARAMS)}")
        if len(params.getlist(name)) > 1:
            raise invalid(f"query parameter '{name}' is given more than once")
    conditions: list[str] = []
    args: list[object] = []

    def where(sql: str, value: object) -> None:
        args.append(value)
        conditions.append(sql.replace("$?", f"${len(args)}"))

    if "status" in params:
        if params["status"] not in {s.value for s in RunStatus}:
            raise invalid(f"'status' is one of {', '.join(s.value for s in RunStatus)}; "
                          f"got '{params['status']}'")
        where("r.status = $?", params["status"])
    if "flowId" in params:
        if not CONTENT_ID.fullmatch(params["flowId"]):
            raise invalid("'flowId' is a flow's id, 64 lowercase hex digits; got "
                          f"{json.dumps(params['flowId'][:80])}")
        where("r.flow_id = $?", params["flowId"])
    if "batchId" in params:
        if not params["batchId"]:
            raise invalid("'batchId' is a batch's id, a non-empty string")
        if not storable(params["batchId"]):
            return JSONResponse({"runs": []})  # no batch has that id
        where("r.batch_id = $?", params["batchId"])
    tenant = tenant_of(request)
    if tenant is not None:
        where("t.tenant = $?", tenant)
    if params.get("pageToken"):
        created_at, run_id = _decode_page_token(params["pageToken"])
        args += [created_at, run_id]
        conditions.append(f"(r.created_at, r.run_id) < (${len(args) - 1}, ${len(args)})")
    limit = _limit(params.get("limit"))
    join = "JOIN gateway_run_tenants t ON t.run_id = r.run_id" if tenant is not None else ""
    sql = (f"SELECT r.run_id, r.flow_id, r.status, r.created_at, r.finished_at, r.batch_id, "
           f"r.batch_index FROM runs r {join} "
           f"{'WHERE ' + ' AND '.join(conditions) if conditions else ''} "
           f"ORDER BY r.created_at DESC, r.run_id DESC LIMIT {limit + 1}")
    rows = await state.pool.fetch(sql, *args)
    runs = [{"runId": row["run_id"], "flowId": row["flow_id"], "status": row["status"],
             "createdAt": row["created_at"], "finishedAt": row["finished_at"],
             "batchId": row["batch_id"], "batchIndex": row["batch_index"]}
            for row in rows[:limit]]
    answer: JSONObject = {"runs": runs}
    if len(rows) > limit:
        last = rows[limit - 1]
        answer["nextPageToken"] = _page_token(last["created_at"], last["run_id"])
    return JSONResponse(answer)


async def get_run(request: Request) -> Response:
    """The run's summary, its input and (redacted) variables, and each step's status."""
    state = gateway_state(request)
    summary = await visible_run(request, state)
    events = await state.client.journal.read(summary.run_id)
    run = fold(summary.run_id, events)
    return JSONResponse({
        "runId": summary.run_id,
        "flowId": summary.flow_id,
        "status": summary.status.value,
        "createdAt": summary.created_at,
        "finishedAt": summary.finished_at,
        "batchId": summary.batch_id,
        "batchIndex": summary.batch_index,
        "parentRunId": summary.parent_run_id,
        "input": run.input,
        # As the journal holds them: secret values were replaced before they were recorded.
        "variables": _recorded_variables(events),
        "result": summary.result.to_json() if summary.result is not None else None,
        "steps": _steps_json(run),
    })


async def cancel_run(request: Request) -> Response:
    state = gateway_state(request)
    summary = await visible_run(request, state)
    if summary.status.terminal:
        raise ApiError(409, "CONFLICT",
                       f"run '{summary.run_id}' has already ended ({summary.status.value})")
    await state.client.cancel(summary.run_id)
    return JSONResponse({"runId": summary.run_id, "status": "cancelling"}, status_code=202)


async def _claim(request: Request, state: GatewayState, run_ids: Sequence[str]) -> None:
    tenant = tenant_of(request)
    if tenant is None:
        return
    taken = await state.claim_runs(run_ids, tenant)
    if taken:
        raise ApiError(409, "CONFLICT", f"'runId' '{taken[0]}' is taken by another tenant")


def _wait_timeout(state: GatewayState, body: Body) -> float | None:
    """How long to wait for results: None without ``wait``; at most the configured limit."""
    asked = body.number("timeoutSeconds")
    if not body.boolean("wait"):
        return None
    limit = state.settings.wait_timeout_s
    return limit if asked is None else min(asked, limit)


def _check_input(flow: Flow, value: JSON, field: str) -> None:
    try:
        check_input(flow, value)
    except InputError as exc:
        at = exc.location.field or "input"
        raise invalid(f"'{field}{at[len('input'):]}': {exc.reason}") from None


@contextlib.contextmanager
def _as_bad_request() -> Iterator[None]:
    """Variables the flow rejects (InputError from the client) are the request's fault."""
    try:
        yield
    except InputError as exc:
        raise invalid(f"'{exc.location.field or 'variables'}': {exc.reason}") from None


def _status_of(result: FlowResult) -> str:
    return RunStatus.COMPLETED.value if result.ok else RunStatus.FAILED.value


def _recorded_variables(events: Sequence[object]) -> JSON:
    for event in events:
        if isinstance(event, RunCreated):
            return event.variables
    return {}


def _steps_json(run: RunState) -> list[JSONObject]:
    steps: list[JSONObject] = []
    for step_id, step in run.steps.items():
        entry: JSONObject = {"stepId": step_id, "status": step.status.value,
                             "attempt": step.attempt, "component": step.component,
                             "startedAt": step.started_at, "finishedAt": step.finished_at}
        if step.error is not None:
            entry["error"] = step.error.to_json()
        if step.skip_reason is not None:
            entry["skipReason"] = step.skip_reason
        steps.append(entry)
    return steps


def _limit(raw: str | None) -> int:
    if raw is None:
        return _DEFAULT_LIMIT
    # ASCII digits only: str.isdigit() also admits "²", which int() refuses.
    if not re.fullmatch("[0-9]{1,4}", raw) or not 1 <= int(raw) <= _MAX_LIMIT:
        raise invalid(f"'limit' is an integer from 1 to {_MAX_LIMIT}; got '{raw}'")
    return int(raw)


def _page_token(created_at: int, run_id: str) -> str:
    raw = json.dumps([created_at, run_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_page_token(token: str) -> tuple[int, str]:
    try:
        value = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        created_at, run_id = value
        if (type(created_at) is int and created_at in _INT64 and isinstance(run_id, str)
                and storable(run_id)):
            return created_at, run_id
    except (ValueError, TypeError, binascii.Error):
        pass
    raise invalid("'pageToken' is not a token this API gave out ('nextPageToken')")


async def runs(request: Request) -> Response:
    # One route for both methods, so a 405 on /runs answers 'Allow: GET, HEAD, POST'.
    return await (list_runs if request.method in ("GET", "HEAD") else submit_run)(request)


def run_routes() -> list[Route]:
    return [
        Route("/api/v1/runs", runs, methods=["GET", "POST"]),
        Route("/api/v1/runs/batch", submit_batch, methods=["POST"]),
        Route("/api/v1/runs/{run_id}", get_run, methods=["GET"]),
        Route("/api/v1/runs/{run_id}/cancel", cancel_run, methods=["POST"]),
    ]

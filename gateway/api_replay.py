"""Replay and fork over HTTP: a run's folded state at any event, and a fork of a run.

``GET /api/v1/runs/{id}/state?at=SEQ`` folds the run's journal (the PostgreSQL projection) up
to event SEQ (default: the last) and answers the state then: the run's status, input and
result, and each step's status, attempt, input, output and error. ``POST
/api/v1/runs/{id}/fork`` with ``{fromStep, input?}`` starts a run that reuses the run's
recorded outputs of the steps that do not read ``fromStep`` and runs the others again (see
:mod:`stepflow_stream.core.fork`); ``input`` replaces the run's input. A tenant sees and forks
only its own runs.
"""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.api_errors import ApiError, Body, invalid, read_json
from gateway.api_state import gateway_state, visible_run
from gateway.auth import tenant_of
from stepflow_stream.cli.run import check_input
from stepflow_stream.core.rundiff import state_view
from stepflow_stream.core.state import RunStatus, fold
from stepflow_stream.errors import InputError
from stepflow_stream.runtime.fork import prepare_fork

__all__ = ["replay_routes"]

_FORK_FIELDS = ("fromStep", "input")


async def run_state(request: Request) -> Response:
    state = gateway_state(request)
    summary = await visible_run(request, state)
    unknown = [name for name in request.query_params if name != "at"]
    if unknown:
        raise invalid(f"unknown query parameter '{unknown[0]}'; known: at")
    events = await state.client.journal.read(summary.run_id)
    last = events[-1].seq if events else -1
    raw = request.query_params.get("at")
    if raw is None:
        at = last
    elif raw.isascii() and raw.isdigit() and int(raw) <= last:
        at = int(raw)
    else:
        raise invalid(f"'at' is an event seq of this run, from 0 to {last}; got '{raw[:40]}'")
    run = fold(summary.run_id, events[: at + 1])
    return JSONResponse({
        "runId": summary.run_id,
        "flowId": summary.flow_id,
        "at": at,
        "lastSeq": last,
        "parentRunId": run.parent_run_id,
        "forkedFromStep": run.forked_from_step,
        **state_view(run),
    })


async def fork_run(request: Request) -> Response:
    state = gateway_state(request)
    summary = await visible_run(request, state)
    body = Body(await read_json(request, state.settings.max_body_bytes), _FORK_FIELDS)
    from_step = body.text("fromStep", required=True)
    assert from_step is not None
    try:
        fork = await prepare_fork(state.client.journal, state.blobs, summary.run_id, from_step,
                                  input=body.any("input"), replace_input=body.has("input"))
    except InputError as exc:
        if exc.location.field == "fromStep":
            raise invalid(f"'fromStep': {exc.reason}") from None
        raise ApiError(409, "CONFLICT", f"run '{summary.run_id}' cannot be forked: "
                       f"{exc.reason}") from None
    try:
        check_input(fork.flow, fork.input)
    except InputError as exc:
        raise invalid(f"'{exc.location.field or 'input'}': {exc.reason}") from None
    new_run_id = uuid.uuid4().hex
    tenant = tenant_of(request)
    if tenant is not None and await state.claim_runs([new_run_id], tenant):
        raise ApiError(409, "CONFLICT", f"run id '{new_run_id}' is taken by another tenant")
    try:
        await state.client.submit(
            fork.flow, fork.input, fork.plan.variables, run_id=new_run_id,
            parent_run_id=summary.run_id, forked_from_step=from_step, reused=fork.plan.reused,
        )
    except InputError as exc:
        raise invalid(f"'{exc.location.field or 'variables'}': {exc.reason}") from None
    state.metrics.runs_submitted += 1
    return JSONResponse({
        "runId": new_run_id,
        "parentRunId": summary.run_id,
        "fromStep": from_step,
        "status": RunStatus.PENDING.value,
        "reusedSteps": list(fork.plan.reused),
        "rerunSteps": list(fork.plan.rerun),
    }, status_code=202)


def replay_routes() -> list[Route]:
    return [
        Route("/api/v1/runs/{run_id}/state", run_state, methods=["GET"]),
        Route("/api/v1/runs/{run_id}/fork", fork_run, methods=["POST"]),
    ]

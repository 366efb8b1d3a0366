"""``POST /flows`` (check and store a flow) and ``GET /flows/{flowId}``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.api_errors import Body, invalid, read_json
from gateway.api_state import gateway_state
from stepflow_stream.core.flow import parse_flow
from stepflow_stream.errors import UserInputError

__all__ = ["flow_routes"]


async def store_flow(request: Request) -> Response:
    """Parse and check the flow (as the cluster would run it), then store it as a blob."""
    state = gateway_state(request)
    body = Body(await read_json(request, state.settings.max_body_bytes), ("flow",))
    document = body.object("flow")
    if document is None:
        raise invalid("'flow' is required (an object: the flow document)")
    try:
        flow = parse_flow(document, "flow")
        state.client.check_flow(flow)
    except UserInputError as exc:
        raise invalid(exc.message) from None
    await state.blobs.put(flow.document, "flow")
    state.remember(flow)
    return JSONResponse({"flowId": flow.flow_id, "warnings": list(flow.warnings)})


async def get_flow(request: Request) -> Response:
    flow = await gateway_state(request).flow(request.path_params["flow_id"])
    return JSONResponse({"flowId": flow.flow_id, "flow": flow.document})


def flow_routes() -> list[Route]:
    return [
        Route("/api/v1/flows", store_flow, methods=["POST"]),
        Route("/api/v1/flows/{flow_id}", get_flow, methods=["GET"]),
    ]

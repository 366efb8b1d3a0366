"""``POST /blobs`` (store JSON, get its content id) and ``GET /blobs/{blobId}``."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.api_errors import CONTENT_ID, Body, invalid, not_found, read_json
from gateway.api_state import gateway_state

__all__ = ["blob_routes"]


async def store_blob(request: Request) -> Response:
    """Store ``data`` (any JSON); its id is the hash of its content, as Stepflow's."""
    state = gateway_state(request)
    body = Body(await read_json(request, state.settings.max_body_bytes), ("data", "blobType"))
    if "data" not in body.value:
        raise invalid("'data' is required (any JSON value)")
    blob_type = body.name("blobType") or "data"
    blob_id = await state.blobs.put(body.value["data"], blob_type)
    return JSONResponse({"blobId": blob_id, "blobType": blob_type})


async def get_blob(request: Request) -> Response:
    blob_id = request.path_params["blob_id"]
    # Blob ids are content hashes, as flow ids: anything else names no blob.
    row = await gateway_state(request).pool.fetchrow(
        "SELECT blob_type, data FROM blobs WHERE blob_id = $1", blob_id
    ) if CONTENT_ID.fullmatch(blob_id) else None
    if row is None:
        raise not_found(f"no blob with id '{blob_id}'")
    return JSONResponse({"blobId": blob_id, "blobType": row["blob_type"],
                         "data": json.loads(row["data"])})


def blob_routes() -> list[Route]:
    return [
        Route("/api/v1/blobs", store_blob, methods=["POST"]),
        Route("/api/v1/blobs/{blob_id}", get_blob, methods=["GET"]),
    ]

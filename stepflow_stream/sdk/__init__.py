"""Write component servers in Python: register functions, serve them over Stepflow's HTTP
protocol (JSON-RPC 2.0 on ``POST /``, callbacks over SSE), the way stepflow-py 0.9.2 does.

::

    from stepflow_stream.sdk import ComponentServer, Context

    server = ComponentServer("demo")

    @server.component(description="Store a value and give back its blob id.")
    async def remember(input: Remember, context: Context) -> Remembered:
        return Remembered(blob_id=await context.put_blob(input.value))

and run ``stepflow-stream serve-components my_module:server --port 0``.
"""

from stepflow_stream.sdk._context import Context, StepInfo, SyncContext
from stepflow_stream.sdk._errors import CallbackError, ComponentError, RpcErrorCode
from stepflow_stream.sdk._server import ComponentServer

__all__ = [
    "CallbackError",
    "ComponentError",
    "ComponentServer",
    "Context",
    "RpcErrorCode",
    "StepInfo",
    "SyncContext",
]

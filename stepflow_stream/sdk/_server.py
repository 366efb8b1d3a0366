"""ComponentServer: the registry of components a process serves, and its ASGI app."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TypeVar, overload

from starlette.applications import Starlette

from stepflow_stream.sdk._app import ComponentApp
from stepflow_stream.sdk._registry import ComponentFunction, ComponentRegistry, inspect_component

F = TypeVar("F", bound=ComponentFunction)

DEFAULT_MAX_CONCURRENCY = 64


class ComponentServer:
    """Components served over Stepflow's HTTP protocol.

    ::

        server = ComponentServer("text")

        @server.component(description="Count the words of a text.")
        async def count_words(input: Text) -> Count:
            return Count(len(input.text.split()))

    Serve it with ``stepflow-stream serve-components my_module:server`` (or mount
    :meth:`asgi_app` in any ASGI server).
    """

    def __init__(
        self,
        name: str = "components",
        *,
        instance_id: str | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ) -> None:
        self.name = name
        """Shown in logs."""
        self.instance_id = instance_id or uuid.uuid4().hex[:16]
        """Reported in ``Stepflow-Instance-Id`` and ``/health`` so that a load balancer can send
        callback answers (and affine requests) back to this process."""
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        """Executions in flight at most; one more gets HTTP 503."""
        self._registry = ComponentRegistry()

    @overload
    def component(self, function: F, /) -> F: ...

    @overload
    def component(
        self, *, name: str | None = None, description: str | None = None
    ) -> Callable[[F], F]: ...

    def component(
        self,
        function: ComponentFunction | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> ComponentFunction:
        """Register the decorated function as a component and return it unchanged; use as
        ``@server.component`` or ``@server.component(name=..., description=...)``.

        ``name`` defaults to the function's name and may hold placeholders: ``{name}`` for one
        segment, a last ``{*name}`` for the rest (``core/{*component}``). ``description``
        defaults to the docstring. See :mod:`stepflow_stream.sdk._registry` for the signatures
        accepted; a signature that does not fit raises TypeError here, at import time.
        """

        def register(function: F) -> F:
            self._registry.add(inspect_component(function, name, description))
            return function

        return register if function is None else register(function)

    @property
    def components(self) -> list[str]:
        """The registered names (patterns included), in registration order."""
        return [spec.name for spec in self._registry]

    def asgi_app(
        self, *, instance_id: str | None = None, max_concurrency: int | None = None
    ) -> Starlette:
        """A new ASGI app serving the components; the arguments override the server's."""
        return ComponentApp(
            self._registry,
            instance_id=instance_id or self.instance_id,
            max_concurrency=max_concurrency or self.max_concurrency,
        ).starlette()

    def run(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve with uvicorn until SIGINT/SIGTERM, announcing ``{"port": N}`` on stdout."""
        from stepflow_stream.sdk.serve import serve  # serve imports this module

        serve(self, host=host, port=port)

    def __repr__(self) -> str:
        return f"ComponentServer({self.name!r}, components={len(self._registry)})"

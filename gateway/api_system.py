"""``/health``, ``/metrics``, ``/components`` and ``/openapi.json``, and the middleware that
counts requests for ``/metrics``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api_state import GatewayState, Metrics, gateway_state
from gateway.openapi import openapi_document
from stepflow_stream.core.jsonvalue import JSONObject
from stepflow_stream.plugins.registry import create_plugins

__all__ = ["RequestCounter", "system_routes"]

_CHECK_TIMEOUT_S = 3.0
# Plugins that know their components without asking a server.
_LOCAL_PLUGIN_TYPES = ("builtin", "mock")


async def health(request: Request) -> Response:
    """200 when PostgreSQL and Kafka answer, else 503 naming the one that does not."""
    state = gateway_state(request)
    checks = {"postgres": await _check(state.pool.fetchval("SELECT 1")),
              "kafka": await _check(_kafka_metadata(state))}
    healthy = all(value == "ok" for value in checks.values())
    return JSONResponse({"status": "ok" if healthy else "unavailable",
                         "instanceId": state.instance_id, "checks": checks},
                        status_code=200 if healthy else 503)


async def _kafka_metadata(state: GatewayState) -> None:
    # A metadata request goes to a broker: a cached answer would not show one that is gone.
    await state.kafka.fetch_all_metadata()


async def _check(probe: Awaitable[object]) -> str:
    try:
        await asyncio.wait_for(probe, _CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure to answer is what the check reports
        return f"unreachable: {type(exc).__name__}: {exc}".rstrip(": ")
    return "ok"


async def metrics(request: Request) -> Response:
    return PlainTextResponse(gateway_state(request).metrics.prometheus(),
                             media_type="text/plain; version=0.0.4")


async def components(request: Request) -> Response:
    """The config's routes, each with its plugins, and the components of the plugins that know
    them without a server (builtin, mock); ``stepflow`` plugins' servers are not called."""
    state = gateway_state(request)
    if state.components is None:
        state.components = await _components(state)
    return JSONResponse({"routes": state.components})


async def _components(state: GatewayState) -> list[JSONObject]:
    config = state.config
    plugins = create_plugins(config, Path.cwd())
    listed: dict[str, list[str]] = {}
    for name, plugin in plugins.items():
        if config.plugins[name].type in _LOCAL_PLUGIN_TYPES:
            listed[name] = sorted(info.component for info in await plugin.list_components())
    routes: list[JSONObject] = []
    for route in config.routes.routes:
        rules: list[JSONObject] = []
        for rule in route.rules:
            entry: JSONObject = {"plugin": rule.plugin,
                                 "pluginType": config.plugins[rule.plugin].type}
            if rule.plugin in listed:
                entry["components"] = [c for c in listed[rule.plugin] if rule.admits(c)]
            rules.append(entry)
        routes.append({"route": route.pattern.text, "rules": rules})
    return routes


def system_routes(routes: list[BaseRoute]) -> list[Route]:
    """The system routes; ``routes`` (all the app's, these included) is what the OpenAPI
    document is checked against."""

    async def openapi(_request: Request) -> Response:
        return JSONResponse(openapi_document(routes))

    return [
        Route("/api/v1/health", health, methods=["GET"]),
        Route("/api/v1/metrics", metrics, methods=["GET"]),
        Route("/api/v1/components", components, methods=["GET"]),
        Route("/api/v1/openapi.json", openapi, methods=["GET"]),
    ]


class RequestCounter:
    """ASGI middleware: counts each HTTP request by method, route template and status (the
    template, not the path, so run ids do not make a series each)."""

    def __init__(self, app: ASGIApp, counters: Metrics) -> None:
        self.app = app
        self.counters = counters

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.counters.requests[(scope["method"], template, status)] += 1

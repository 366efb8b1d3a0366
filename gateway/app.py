"""The gateway's Starlette app: the REST API under ``/api/v1`` in front of a cluster.

Requests go through the request counter (``/metrics``), then bearer-token checks, then the
routes; every error answer is ``{"code", "message"}`` JSON (``api_errors``). The app's lifespan
connects to the cluster (Kafka and PostgreSQL) before the first request is served.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from aiokafka.client import AIOKafkaClient
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from gateway.api_blobs import blob_routes
from gateway.api_errors import exception_handlers
from gateway.api_flows import flow_routes
from gateway.api_replay import replay_routes
from gateway.api_runs import run_routes
from gateway.api_state import GatewayState, Metrics
from gateway.api_system import RequestCounter, system_routes
from gateway.auth import BearerAuth
from gateway.settings import GatewaySettings
from stepflow_stream.config.model import Config
from stepflow_stream.distributed.client import DistributedClient
from stepflow_stream.distributed.options import DistributedOptions
from stepflow_stream.journal.postgres import PostgresDatabase

__all__ = ["Lifespan", "create_app"]

Lifespan = Callable[[Any, DistributedOptions, PostgresDatabase],
                    AbstractAsyncContextManager[None]]
"""Something more to run for the app's lifetime, given the app's ``state``, the options and
the database (e.g. ``gateway.events.serving_events``, which the events routes need)."""


def create_app(
    config: Config,
    options: DistributedOptions,
    *,
    settings: GatewaySettings | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    lifespans: Sequence[Lifespan] = (),
) -> Starlette:
    """The gateway app for the cluster of ``options``; ``extra_routes`` are served besides the
    API's own (authenticated and counted as they are), with ``lifespans`` run around them."""
    settings = settings or GatewaySettings()
    counters = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            client = await stack.enter_async_context(DistributedClient(options, config))
            assert client.database is not None
            kafka = AIOKafkaClient(bootstrap_servers=options.bootstrap_servers)
            stack.push_async_callback(kafka.close)
            await kafka.bootstrap()
            state = GatewayState(config, settings, client, client.database, counters, kafka)
            await state.create_tables()
            app.state.gateway = state
            for extra in lifespans:
                await stack.enter_async_context(extra(app.state, options, client.database))
            yield

    routes: list[BaseRoute] = [*flow_routes(), *run_routes(), *replay_routes(), *blob_routes()]
    routes += extra_routes
    routes += system_routes(routes)
    return Starlette(
        routes=routes,
        middleware=[Middleware(RequestCounter, counters=counters),
                    Middleware(BearerAuth, tokens=settings.tokens)],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )

"""What the routes share for the app's lifetime: the cluster client, the database, the settings,
the flows already parsed, the tenants of runs, and the request counters of ``/metrics``."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg
from aiokafka.client import AIOKafkaClient
from starlette.requests import Request

from gateway.api_errors import CONTENT_ID, not_found, storable
from gateway.auth import tenant_of
from gateway.settings import GatewaySettings
from stepflow_stream.config.model import Config
from stepflow_stream.core.flow import Flow, parse_flow
from stepflow_stream.core.jsonvalue import JSONObject
from stepflow_stream.distributed.client import DistributedClient
from stepflow_stream.errors import UserInputError
from stepflow_stream.journal.base import RunSummary
from stepflow_stream.journal.postgres import PostgresBlobStore, PostgresDatabase

__all__ = ["GatewayState", "Metrics", "gateway_state", "visible_run"]

# The tenant of each run submitted with a tenant's token. A table of the gateway's own, beside
# the run index the orchestrator writes, so the runtime knows nothing of tenants.
_CREATE_TENANTS = """
    CREATE TABLE IF NOT EXISTS gateway_run_tenants (
        run_id text PRIMARY KEY,
        tenant text NOT NULL
    );
    CREATE INDEX IF NOT EXISTS gateway_run_tenants_by_tenant
        ON gateway_run_tenants (tenant, run_id)
"""


@dataclass
class Metrics:
    """Counters for ``GET /metrics``."""

    requests: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    """Requests by (method, route template, status)."""
    runs_submitted: int = 0

    def prometheus(self) -> str:
        """The counters in Prometheus' text exposition format."""
        lines = [
            "# HELP stepflow_gateway_requests_total HTTP requests by route and status.",
            "# TYPE stepflow_gateway_requests_total counter",
        ]
        for (method, route, status), count in sorted(self.requests.items()):
            lines.append(f'stepflow_gateway_requests_total{{method="{method}",'
                         f'route="{_label(route)}",status="{status}"}} {count}')
        lines += [
            "# HELP stepflow_gateway_runs_submitted_total Runs submitted through the gateway.",
            "# TYPE stepflow_gateway_runs_submitted_total counter",
            f"stepflow_gateway_runs_submitted_total {self.runs_submitted}",
        ]
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass
class GatewayState:
    """The app's shared state, set up by its lifespan (``app.state.gateway``)."""

    config: Config
    settings: GatewaySettings
    client: DistributedClient
    database: PostgresDatabase
    metrics: Metrics
    kafka: AIOKafkaClient
    """A client of its own for the health check's metadata requests."""
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Tells this gateway process from others behind one load balancer."""
    components: list[JSONObject] | None = None
    """``GET /components``' answer, made on the first request."""
    _flows: dict[str, Flow] = field(default_factory=dict)

    @property
    def pool(self) -> asyncpg.Pool[asyncpg.Record]:
        return self.database.pool

    @property
    def blobs(self) -> PostgresBlobStore:
        return PostgresBlobStore(self.database)

    async def create_tables(self) -> None:
        # Two gateways starting at once: IF NOT EXISTS does not keep the loser from failing on
        # the catalog's unique index, but the table is there all the same.
        with contextlib.suppress(asyncpg.UniqueViolationError):
            await self.pool.execute(_CREATE_TENANTS)

    async def flow(self, flow_id: str) -> Flow:
        """The stored flow of that id, parsed (once per process); 404 if there is none.

        Any blob of that id is the flow's document, whatever type it was stored with (the
        same document stored first as a plain blob keeps that type), as the orchestrator
        reads it; a blob that is no flow is none."""
        flow = self._flows.get(flow_id)
        if flow is not None:
            return flow
        missing = not_found(f"no flow with id '{flow_id}' ('flowId'); store it with "
                            "POST /api/v1/flows")
        if not CONTENT_ID.fullmatch(flow_id):
            raise missing
        text = await self.pool.fetchval("SELECT data FROM blobs WHERE blob_id = $1", flow_id)
        if text is None:
            raise missing
        try:
            flow = parse_flow(json.loads(text), f"flow {flow_id[:12]}")
        except UserInputError:
            raise missing from None
        self._flows[flow_id] = flow
        return flow

    def remember(self, flow: Flow) -> None:
        self._flows[flow.flow_id] = flow

    async def claim_runs(self, run_ids: Sequence[str], tenant: str) -> list[str]:
        """Record ``tenant`` as the owner of the runs; returns the ids another tenant owns
        already (those are not submitted)."""
        rows = await self.pool.fetch(
            "INSERT INTO gateway_run_tenants (run_id, tenant) SELECT unnest($1::text[]), $2 "
            "ON CONFLICT (run_id) DO UPDATE SET tenant = gateway_run_tenants.tenant "
            "RETURNING run_id, tenant",
            list(run_ids), tenant,
        )
        return [row["run_id"] for row in rows if row["tenant"] != tenant]

    async def owner(self, run_id: str) -> str | None:
        tenant: str | None = await self.pool.fetchval(
            "SELECT tenant FROM gateway_run_tenants WHERE run_id = $1", run_id)
        return tenant


async def visible_run(request: Request, state: GatewayState) -> RunSummary:
    """The run of the path's ``run_id``, if the request's token may see it; another tenant's
    run is "not found", as one that does not exist."""
    run_id: str = request.path_params["run_id"]
    tenant = tenant_of(request)
    summary = await state.client.journal.get_run(run_id) if storable(run_id) else None
    if summary is None or (tenant is not None and await state.owner(run_id) != tenant):
        raise not_found(f"no run with id '{run_id}'")
    return summary


def gateway_state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state

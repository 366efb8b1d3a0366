"""Schemathesis against the live gateway: the OpenAPI document is fetched from the gateway
served by uvicorn on loopback (real HTTP, the app as ``stepflow-stream gateway`` builds it,
with the event streams), and every operation gets generated requests, valid and invalid ones
(positive and negative modes, the coverage phase's boundary values, then fuzzing). Each
answer must be no 5xx, have a documented status and content type, match the documented
schema, reject what the document calls invalid, and, when it is an error, be ``{"code",
"message"}`` JSON. A sample of requests without a token must all be refused with 401. The
engine is driven directly (``schemathesis.pytest.from_fixture`` does not run on pytest 9),
and generation is derandomized with a fixed seed, so CI sends the same requests every time.

The deployment has no agents (runs are accepted, none progresses), so a few runs are made
beforehand by the embedded runtime writing the same PostgreSQL projection the orchestrator
writes: a completed, a failed and a running one. In every other case the generated ids that
are valid are swapped for ones that exist, so both "not found" and the answers about real
flows, runs and blobs are exercised. ``wait: true`` waits at most
``waitTimeoutSeconds`` (0.3 s here).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import yaml
from agents_cluster import serving
from gateway_support import PLUGINS, auth, gateway_section
from schemathesis import Case, engine
from schemathesis.engine import events
from schemathesis.hooks import GLOBAL_HOOK_DISPATCHER

from gateway.app import create_app
from gateway.batch_events import batch_event_routes
from gateway.events import event_routes, serving_events
from gateway.settings import gateway_settings
from stepflow_stream.config import load_config
from stepflow_stream.core.flow import parse_flow
from stepflow_stream.distributed.options import distributed_options
from stepflow_stream.journal.postgres import (
    PostgresBlobStore,
    PostgresDatabase,
    PostgresJournal,
)
from stepflow_stream.runtime.embedded import EmbeddedRuntime

FLOW: dict[str, Any] = {
    "schema": "https://stepflow.org/schemas/v1/flow.json",
    "name": "sleep_then_echo",
    "inputSchema": {"type": "object", "properties": {"x": {"type": "integer"},
                                                     "ms": {"type": "integer"}}},
    "steps": [{"id": "a", "component": "/builtin/sleep",
               "input": {"duration_ms": {"$input": "ms"}, "passthrough": {"$input": "x"}}}],
    "output": {"$step": "a"},
}
REQUEST_TIMEOUT_S = 10.0
"""Far longer than the 2 s an event stream waits for an unknown run to appear: a request
that times out fails the test, and CI's machine is busy."""
EXAMPLES = 50
"""Fuzzing examples per operation and mode, after the coverage phase's boundary cases."""
CONFIG = {
    "seed": 7840,
    "suppress-health-check": ["all"],
    "workers": 1,
    "request-timeout": REQUEST_TIMEOUT_S,
    "cache": {"enabled": False},
    "generation": {"mode": "all", "max-examples": EXAMPLES, "deterministic": True,
                   "database": "none"},
    "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True},
               "fuzzing": {"enabled": True}, "stateful": {"enabled": False}},
    "operations": [
        # An unknown run's stream answers 404 only after 2 s, and a running run's stream
        # stays open until the request timeout: fewer cases there.
        {"include-path-regex": "/events$", "generation": {"max-examples": 6},
         "phases": {"coverage": {"enabled": False}}},
        # The batches it finds (in POST /runs/batch answers) never end here: their streams
        # are cut short at the timeout (an unknown batch's 404 is at once).
        {"include-path-regex": "^/api/v1/batches/", "request-timeout": 2.5,
         "generation": {"max-examples": 4}, "phases": {"coverage": {"enabled": False}}},
    ],
}
CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "negative_data_rejection",
          "error_bodies_have_code_and_message"]
HASH = re.compile("[0-9a-f]{64}")

# Raised by schemathesis' own strategies, not by anything here.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")


@dataclass
class Known:
    """Ids that exist in the deployment."""

    flow_id: str
    blob_id: str
    ended_run_ids: tuple[str, ...]
    running_run_id: str
    turns: Iterator[int] = field(default_factory=itertools.count)

    def pin(self, case: Case) -> None:
        """Every other case, swap its valid generated ids for existing ones."""
        turn = next(self.turns)
        if turn % 2:
            return
        path = case.path_parameters or {}
        for name, existing in (("flow_id", self.flow_id), ("blob_id", self.blob_id)):
            if isinstance(path.get(name), str) and HASH.fullmatch(path[name]):
                path[name] = existing
        if isinstance(path.get("run_id"), str):
            # A running run's stream would stay open until the request timeout.
            runs = self.ended_run_ids if case.path.endswith("/events") else (
                *self.ended_run_ids, self.running_run_id)
            path["run_id"] = runs[turn // 2 % len(runs)]
        for fields in (case.body, case.query):
            if (isinstance(fields, dict) and isinstance(fields.get("flowId"), str)
                    and HASH.fullmatch(fields["flowId"])):
                fields["flowId"] = self.flow_id


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str,
                postgres_url: str) -> Path:
    """A deployment without agents, whose ``wait: true`` waits 0.3 s at most."""
    prefix = f"st{uuid.uuid4().hex[:10]}"
    document = {
        **PLUGINS,
        "runtime": {"type": "kafka", "bootstrapServers": kafka_bootstrap,
                    "topicPrefix": f"{prefix}.", "partitions": 2},
        "stateStore": {"type": "postgres",
                       "databaseUrl": f"{postgres_url}?search_path={prefix}"},
        "gateway": {**gateway_section(max_body_bytes=4096), "waitTimeoutSeconds": 0.3},
    }
    path = tmp_path_factory.mktemp("schemathesis") / "stepflow-config.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def gateway_url(config_path: Path) -> Iterator[str]:
    """The gateway as the ``gateway`` command builds it, served by uvicorn on loopback."""
    config = load_config(config_path, os.environ)
    app = create_app(config, distributed_options(config),
                     settings=gateway_settings(config_path, os.environ),
                     extra_routes=[*event_routes(ping_s=1), *batch_event_routes(ping_s=1)],
                     lifespans=[serving_events])
    with serving(app) as url:
        yield url


@pytest.fixture(scope="module")
def known(gateway_url: str, config_path: Path) -> Known:
    """A stored flow and blob (through the API), and runs of the flow that the embedded
    runtime ran into the deployment's PostgreSQL projection."""
    with httpx.Client(base_url=f"{gateway_url}/api/v1", headers=auth("admin")) as http:
        flow_id = http.post("/flows", json={"flow": FLOW}).json()["flowId"]
        blob_id = http.post("/blobs", json={"data": {"rows": [1, 2]}}).json()["blobId"]
    completed, failed, running = asyncio.run(_run_flows(config_path))
    return Known(flow_id, blob_id, (completed, failed), running)


async def _run_flows(config_path: Path) -> tuple[str, str, str]:
    config = load_config(config_path, os.environ)
    database = await PostgresDatabase.connect(distributed_options(config).database_url)
    flow = parse_flow(FLOW, "flow")
    try:
        async with EmbeddedRuntime(config, PostgresJournal(database),
                                   PostgresBlobStore(database)) as runtime:
            completed, result = await runtime.run(flow, {"x": 1, "ms": 1})
            assert result.ok, result
            failed, result = await runtime.run(flow, {"x": 1, "ms": -1})
            assert not result.ok, result
            # Stopped with the runtime: its step never finishes, so the run stays running.
            running = await runtime.submit(flow, {"x": 1, "ms": 3_600_000})
            await asyncio.sleep(0.2)
    finally:
        await database.close()
    return completed, failed, running


def _check_against_the_document(gateway_url: str, known: Known,
                                config: dict[str, Any]) -> tuple[list[str], set[str]]:
    """Run schemathesis' engine (its phases and checks as ``config`` says) against the live
    gateway; returns the failures, one readable line each, and the operations it tested."""
    schema = schemathesis.openapi.from_url(
        f"{gateway_url}/api/v1/openapi.json", headers=auth("admin"),
        config=schemathesis.Config.from_dict(config))

    def before_call(_context: Any, case: Case, _kwargs: dict[str, Any]) -> None:
        known.pin(case)

    schemathesis.hook("before_call")(before_call)
    failures: list[str] = []
    tested: set[str] = set()
    try:
        for event in engine.from_schema(schema).execute():
            if isinstance(event, events.NonFatalError):
                failures.append(f"{event.label}: error: {event.info.format()}")
            elif isinstance(event, events.FatalError):
                failures.append(f"fatal: {event.exception!r}")
            elif isinstance(event, events.ScenarioFinished) and event.label is not None:
                if event.recorder.interactions:
                    tested.add(event.label)
                failures += _failed_checks(event)
    finally:
        GLOBAL_HOOK_DISPATCHER.unregister(before_call)
    return failures, tested


def _failed_checks(event: events.ScenarioFinished) -> list[str]:
    found = []
    for nodes in event.recorder.checks.values():
        for node in nodes:
            if node.failure_info is not None:
                failure = node.failure_info.failure
                found.append(f"{event.label}: {failure.title}: {failure.message}\n"
                             f"    {node.failure_info.code_sample}")
    return found


def _document_operations(gateway_url: str) -> set[str]:
    """The operations of the document but the one serving it, which schemathesis leaves
    out (``tests/gateway/test_gateway_api.py`` reads it)."""
    document = httpx.get(f"{gateway_url}/api/v1/openapi.json", headers=auth("admin")).json()
    return {f"{method.upper()} {path}" for path, operations in document["paths"].items()
            for method in operations} - {"GET /api/v1/openapi.json"}


@schemathesis.check
def error_bodies_have_code_and_message(ctx: Any, response: Any, case: Case) -> None:
    """Every 4xx and 5xx answer, documented or not (405, unknown paths), is Error JSON."""
    if response.status_code < 400:
        return
    content_type = (response.headers.get("content-type") or [""])[0]
    assert content_type.startswith("application/json"), (
        f"{response.status_code} answered as {content_type!r}")
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"code", "message"}, body
    assert isinstance(body["code"], str) and body["code"], body
    assert isinstance(body["message"], str) and body["message"], body


@schemathesis.check
def refused_without_token(ctx: Any, response: Any, case: Case) -> None:
    """Without a token, every operation but health answers 401 naming the header."""
    if case.path == "/api/v1/health":
        return
    assert response.status_code == 401, f"{response.status_code} without a token"
    challenge = (response.headers.get("www-authenticate") or [""])[0]
    assert challenge.startswith("Bearer"), challenge
    body = response.json()
    assert body["code"] == "UNAUTHENTICATED" and "Authorization" in body["message"], body


def test_every_operation_answers_as_documented(gateway_url: str, known: Known) -> None:
    config = {**CONFIG, "headers": auth("admin"), "checks": {
        "enabled": False, **{name: {"enabled": True} for name in CHECKS}}}
    failures, tested = _check_against_the_document(gateway_url, known, config)
    assert not failures, "\n".join(failures)
    assert tested == _document_operations(gateway_url)


def test_requests_without_a_token_are_refused(gateway_url: str, known: Known) -> None:
    config = {**CONFIG, "checks": {"enabled": False, "refused_without_token": {"enabled": True}},
              "generation": {**CONFIG["generation"], "max-examples": 2},
              "phases": {**CONFIG["phases"], "coverage": {"enabled": False}},
              "operations": []}
    failures, tested = _check_against_the_document(gateway_url, known, config)
    assert not failures, "\n".join(failures)
    assert tested == _document_operations(gateway_url)


def test_ids_postgresql_cannot_hold_are_not_found(gateway_url: str) -> None:
    """A NUL in a path parameter (PostgreSQL text cannot hold it; generated data seldom has
    one) is an id nothing has, in every operation that takes one."""
    document = httpx.get(f"{gateway_url}/api/v1/openapi.json", headers=auth("admin")).json()
    swept = []
    with httpx.Client(base_url=gateway_url, headers=auth("admin"), timeout=10) as http:
        for path, operations in document["paths"].items():
            if "{" not in path:
                continue
            url = re.sub(r"\{[a-z_]+\}", "a%00b", path)
            for method in operations:
                response = http.request(method.upper(), url, json={})
                assert response.status_code == 404, (method, path, response.text)
                assert response.json()["code"] == "NOT_FOUND"
                swept.append(f"{method} {path}")
    assert len(swept) >= 8, swept

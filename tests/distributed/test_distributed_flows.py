"""Every flow of ``tests/flows`` gives the same FlowResult on the distributed runtime as on the
embedded one, for every test case.

For each flow file that ``stepflow-stream test`` would run (the same files, skipped the same
way as in ``stepflow_stream.flowtests``), the cases run twice:

- embedded: an ``EmbeddedRuntime`` with an in-memory journal and blob store, the config the
  cases run with (``config_for_cases``) and ``base_dir`` = the flow's folder, one case after
  the other, as ``stepflow-stream test`` does;
- distributed: real ``stepflow-stream agents`` processes started with ``--plugins-from-flow``
  (an orchestrator plus one worker per plugin of the flow's test config), on the real Kafka
  broker and PostgreSQL server, every case submitted at once through a ``DistributedClient``
  built with the combined config (``cluster_config``).

The two FlowResults must be equal (the whole object, error messages included), and each must
match the case's expected output when the case states one, so the comparison is not vacuous.
A problem with one flow (a mismatch, agents that do not start, a run that does not end) is
collected and the other flows carry on; the test fails at the end listing them all.

A cluster start costs a few seconds, so several flows' clusters run at once (``_PARALLEL``),
each with its own topic prefix; each cluster is stopped as soon as its flow is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from agents_cluster import ORCHESTRATOR, AgentsCluster
from aiokafka.admin import AIOKafkaAdminClient

from stepflow_stream.cli.distributed import cluster_config
from stepflow_stream.config import Config
from stepflow_stream.core.events import ErrorInfo, FlowResult
from stepflow_stream.core.flow import Flow, is_flow_document, parse_flow
from stepflow_stream.core.source import parse_document
from stepflow_stream.distributed.client import DistributedClient
from stepflow_stream.distributed.options import distributed_options
from stepflow_stream.errors import ErrorCode, FlowError, InputError, UserInputError
from stepflow_stream.flowtests import (
    config_for_cases,
    find_flow_files,
    result_matches,
    run_flow_file,
)
from stepflow_stream.journal.memory import MemoryBlobStore, MemoryJournal
from stepflow_stream.runtime.embedded import EmbeddedOptions, EmbeddedRuntime

if TYPE_CHECKING:
    from stepflow_stream.core.flow import TestCase

FLOWS = Path(__file__).resolve().parents[1] / "flows"

_PARALLEL = 6
"""Flows whose clusters run at once (each cluster is 2 to 4 agent processes)."""
_RUN_TIMEOUT_S = 60.0
"""How long one case's run may take on the cluster before it counts as hung."""
_START_TIMEOUT_S = 90.0
"""How long an agent may take to be ready (startup is slow while other clusters start)."""
_LOG_TAIL = 2500


@dataclass
class FlowFile:
    """A file that ``stepflow-stream test`` runs: a flow with cases, or a load problem."""

    path: Path
    flow: Flow | None = None
    problem: str = ""

    @property
    def name(self) -> str:
        return str(self.path.relative_to(FLOWS.parent.parent))


@dataclass
class Report:
    """What went wrong, flow by flow, and how long the work took."""

    problems: list[str] = field(default_factory=list)
    cases_compared: int = 0
    cases_checked_against_expected: int = 0
    flows_compared: int = 0

    def add(self, flow: FlowFile, case: str, message: str) -> None:
        self.problems.append(f"{flow.name} [{case}]: {message}")


def flow_files() -> list[FlowFile]:
    """The files under tests/flows that ``run_flow_file`` runs cases of, decided the same way:
    unreadable or unparsable files are problems (except JSON files and configs, skipped), files
    that are no flow document are skipped, flows without cases are skipped."""
    found: list[FlowFile] = []
    for path in find_flow_files([FLOWS]):
        try:
            document = parse_document(path.read_text(encoding="utf-8"), str(path), FlowError)
        except (OSError, UnicodeDecodeError) as exc:
            found.append(FlowFile(path, problem=f"cannot read: {exc}"))
            continue
        except UserInputError as exc:
            if path.suffix == ".json" or path.name.startswith("stepflow-config"):
                continue
            found.append(FlowFile(path, problem=str(exc)))
            continue
        if not is_flow_document(document):
            continue
        try:
            flow = parse_flow(document, str(path))
        except UserInputError as exc:
            found.append(FlowFile(path, problem=str(exc)))
            continue
        if flow.test is None or not flow.test.cases:
            continue
        found.append(FlowFile(path, flow))
    return found


def _input_error(exc: InputError) -> FlowResult:
    """What ``stepflow-stream test`` makes of a run refused before it starts."""
    return FlowResult(error=ErrorInfo(ErrorCode.INVALID_INPUT, str(exc)))


async def embedded_results(flow_file: FlowFile, run_ids: list[str]) -> list[FlowResult]:
    """The cases' results on the embedded runtime, as ``run_flow_file`` computes them (with
    the run ids given: ``runtime.run`` is ``submit`` then ``wait``)."""
    flow, path = flow_file.flow, flow_file.path
    assert flow is not None and flow.test is not None
    runtime = EmbeddedRuntime(config_for_cases(flow, path), MemoryJournal(), MemoryBlobStore(),
                              EmbeddedOptions(base_dir=path.parent))
    runtime.check_flow(flow)
    results = []
    async with runtime:
        for case, run_id in zip(flow.test.cases, run_ids, strict=True):
            try:
                await runtime.submit(flow, case.input, case.variables, run_id=run_id)
                result = await runtime.wait(run_id)
            except InputError as exc:
                result = _input_error(exc)
            results.append(result)
    return results


def agent_logs(cluster: AgentsCluster) -> str:
    """The end of every agent's log, for a report."""
    parts = []
    for role, agent in cluster.processes.items():
        state = "alive" if agent.alive() else f"exited {agent.process.returncode}"
        parts.append(f"--- {role} ({state}), {agent.log_path}:\n{agent.log()[-_LOG_TAIL:]}")
    return "\n".join(parts)


async def distributed_results(
    flow_file: FlowFile, run_ids: list[str], cluster: AgentsCluster, config: Config
) -> list[FlowResult | str]:
    """The cases' results on the cluster (all submitted at once); a string where a run did
    not end."""
    flow = flow_file.flow
    assert flow is not None and flow.test is not None
    async with DistributedClient(distributed_options(config), config) as client:

        async def one(case: TestCase, run_id: str) -> FlowResult | str:
            try:
                await client.submit(flow, case.input, case.variables, run_id=run_id)
            except InputError as exc:
                return _input_error(exc)
            try:
                return await client.wait(run_id, timeout_s=_RUN_TIMEOUT_S)
            except TimeoutError as exc:
                return f"{exc}\n{agent_logs(cluster)}"

        return list(await asyncio.gather(
            *(one(case, run_id) for case, run_id in zip(flow.test.cases, run_ids, strict=True))
        ))


def _show(result: FlowResult | str) -> str:
    if isinstance(result, str):
        return result
    return json.dumps(result.to_json(), ensure_ascii=False, sort_keys=True)


async def compare_flow(
    flow_file: FlowFile, make_cluster: Callable[..., AgentsCluster], report: Report
) -> None:
    """Run one flow's cases on both runtimes and add what differs to ``report``."""
    flow, path = flow_file.flow, flow_file.path
    assert flow is not None and flow.test is not None
    cases = flow.test.cases
    # One run id per case for both runtimes: sub-run ids (in the error data of a failed
    # /iterate pass, say) derive from it, so the whole FlowResults can be compared.
    run_ids = [f"{path.stem}-{i}-{uuid.uuid4().hex}" for i in range(len(cases))]
    try:
        embedded = await embedded_results(flow_file, run_ids)
    except Exception as exc:
        report.add(flow_file, "(embedded)", f"the embedded runtime cannot run the flow: {exc!r}")
        return
    cluster = make_cluster(plugins_from_flow=path)
    try:
        try:
            config = cluster_config(cluster.config_path, path)
            roles = [ORCHESTRATOR, *(f"worker:{name}" for name in config.plugins)]
            await asyncio.to_thread(cluster.start_all, roles, _START_TIMEOUT_S)
            distributed = await distributed_results(flow_file, run_ids, cluster, config)
        except Exception as exc:
            report.add(flow_file, "(cluster)",
                       f"the distributed runtime cannot run the flow: {exc!r}\n"
                       f"{traceback.format_exc(limit=4)}\n{agent_logs(cluster)}")
            return
    finally:
        await asyncio.to_thread(cluster.stop)
    report.flows_compared += 1
    for case, here, there in zip(cases, embedded, distributed, strict=True):
        report.cases_compared += 1
        if here != there:
            report.add(flow_file, case.name,
                       f"results differ\n  embedded:    {_show(here)}\n"
                       f"  distributed: {_show(there)}")
        if case.output is None:
            continue
        report.cases_checked_against_expected += 1
        for runtime, result in (("embedded", here), ("distributed", there)):
            if isinstance(result, str):
                continue  # already reported as a difference
            problem = result_matches(case.output, result)
            if problem:
                report.add(flow_file, case.name, f"{runtime} result is not the expected one: "
                           f"{problem}\n  result: {_show(result)}")


async def delete_topics(bootstrap: str, prefixes: list[str]) -> None:
    """Drop the topics the clusters created (best effort: a leftover topic harms nothing)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    with contextlib.suppress(Exception):
        await admin.start()
        try:
            names = [t for t in await admin.list_topics() if t.startswith(tuple(prefixes))]
            if names:
                await admin.delete_topics(names)
        finally:
            await admin.close()


@pytest.mark.parametrize("driver", ["faust", "direct"])
async def test_every_flow_gives_the_same_result_distributed_as_embedded(
    cluster_factory: Callable[..., AgentsCluster], kafka_bootstrap: str, driver: str
) -> None:
    files = flow_files()
    report = Report()
    for loading in (f for f in files if f.flow is None):
        report.add(loading, "(load)", loading.problem)
    flows = [f for f in files if f.flow is not None]
    assert len(flows) >= 50, f"expected the flows of {FLOWS}, found {len(flows)}"

    clusters: list[AgentsCluster] = []

    def make_cluster(**kwargs: object) -> AgentsCluster:
        cluster = cluster_factory(driver=driver, **kwargs)
        clusters.append(cluster)
        return cluster

    slots = asyncio.Semaphore(_PARALLEL)

    async def limited(flow_file: FlowFile) -> None:
        async with slots:
            await compare_flow(flow_file, make_cluster, report)

    started = time.monotonic()
    try:
        await asyncio.gather(*(limited(f) for f in flows))
    finally:
        await asyncio.to_thread(lambda: [c.stop() for c in clusters])
        await delete_topics(kafka_bootstrap, [c.prefix for c in clusters])
    elapsed = time.monotonic() - started

    summary = (f"{report.flows_compared}/{len(flows)} flows, {report.cases_compared} cases "
               f"compared ({report.cases_checked_against_expected} against their expected "
               f"output) in {elapsed:.0f} s")
    print(summary)
    assert not report.problems, (
        f"{len(report.problems)} problems ({summary}):\n\n" + "\n\n".join(report.problems)
    )
    assert report.cases_checked_against_expected > 0, summary


async def test_the_flows_compared_are_those_stepflow_stream_test_runs() -> None:
    """The same files, skipped the same way: ``run_flow_file`` gives case outcomes for exactly
    the files ``flow_files`` keeps (a flow with cases, or a load problem)."""
    ran = {path for path in find_flow_files([FLOWS]) if await run_flow_file(path)}
    assert {f.path for f in flow_files()} == ran
    assert any(f.flow is not None and any(c.variables for c in f.flow.test.cases)
               for f in flow_files() if f.flow is not None and f.flow.test is not None)

"""``kill -9`` the orchestrator, a worker, or the component server in the middle of a
1,000-run batch of a 5-step flow: every run completes with the right result, each step's
result is in its run's journal once, and a restarted orchestrator reads only the journal after
its checkpoint."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import asyncpg
import pytest
from agents_cluster import ORCHESTRATOR, AgentsCluster

from stepflow_stream.config import load_config
from stepflow_stream.core.events import Event, StepCompleted
from stepflow_stream.core.flow import parse_flow_text
from stepflow_stream.core.state import fold
from stepflow_stream.distributed.client import DistributedClient
from stepflow_stream.distributed.options import DistributedOptions, distributed_options
from stepflow_stream.kafka.journal_reader import read_partition

RUNS = 1000
STEPS = 5
HERE = Path(__file__).resolve().parent

FLOW = parse_flow_text("""
schema: https://stepflow.org/schemas/v1/flow.json
name: five_steps
steps:
  - {id: s1, component: /crash/add_one, input: {value: {$input: value}}}
  - {id: s2, component: /crash/add_one, input: {value: {$step: s1, path: value}}}
  - {id: s3, component: /crash/add_one, input: {value: {$step: s2, path: value}}}
  - {id: s4, component: /crash/add_one, input: {value: {$step: s3, path: value}}}
  - {id: s5, component: /crash/add_one, input: {value: {$step: s4, path: value}}}
output: {$step: s5, path: value}
""", "five_steps.yaml")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ComponentServerProcess:
    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.root / "component-server.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stepflow_stream", "serve-components",
             "crash_components:server", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=HERE, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError("the component server did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait()


@pytest.fixture
def component_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    server = ComponentServerProcess(tmp_path, _free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["faust", "direct"])
def driver(request: pytest.FixtureRequest) -> str:
    """Both ways of feeding the agents: Faust agents, and plain consumer groups."""
    driver: str = request.param
    return driver


def _cluster(cluster_factory, server: ComponentServerProcess, driver: str) -> AgentsCluster:  # type: ignore[no-untyped-def]
    cluster: AgentsCluster = cluster_factory(
        driver=driver,
        plugins_document={
            "plugins": {"crash": {"type": "stepflow", "url": f"http://127.0.0.1:{server.port}"}},
            "routes": {"/crash/{*component}": [{"plugin": "crash"}]},
            "retry": {"transportMaxRetries": 60,
                      "backoff": {"type": "constant", "minDelayMs": 250, "maxDelayMs": 250}},
        },
        partitions=4, task_partitions=4, checkpoint_every=500,
        workers={"crash": {"concurrency": 64}},
    )
    cluster.start_all([ORCHESTRATOR, "worker:crash"])
    return cluster


async def _submit_batch(client: DistributedClient, batch_id: str) -> None:
    semaphore = asyncio.Semaphore(200)

    async def one(index: int) -> None:
        async with semaphore:
            await client.submit(FLOW, {"value": index}, run_id=f"{batch_id}-{index}",
                                batch_id=batch_id, batch_index=index)

    await asyncio.gather(*(one(i) for i in range(RUNS)))


async def _finished(options: DistributedOptions, batch_id: str) -> int:
    connection = await asyncpg.connect(options.database_url)
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM runs WHERE batch_id = $1 AND finished_at IS NOT NULL",
            batch_id,
        )
        return count
    finally:
        await connection.close()


async def _wait_finished(options: DistributedOptions, batch_id: str, count: int,
                         timeout_s: float, cluster: AgentsCluster) -> None:
    deadline = time.monotonic() + timeout_s
    while (done := await _finished(options, batch_id)) < count:
        cluster.assert_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"only {done} of {count} runs finished in {timeout_s} s")
        await asyncio.sleep(0.1)


async def _steps_completed(options: DistributedOptions, batch_id: str) -> int:
    connection = await asyncpg.connect(options.database_url)
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM journal WHERE type = 'StepCompleted' AND run_id LIKE $1",
            f"{batch_id}-%",
        )
        return count
    finally:
        await connection.close()


async def _snapshot_statuses(options: DistributedOptions, batch_id: str) -> Counter[str]:
    connection = await asyncpg.connect(options.database_url)
    try:
        rows = await connection.fetch(
            "SELECT status, count(*) FROM run_snapshots WHERE run_id LIKE $1 GROUP BY status",
            f"{batch_id}-%",
        )
        return Counter({row[0]: row[1] for row in rows})
    finally:
        await connection.close()


async def _wait_no_unfinished_snapshots(options: DistributedOptions,
                                        batch_id: str) -> Counter[str]:
    """The batch's snapshot statuses once none says unfinished (the projection writes a run's
    final snapshot just after its result): a run snapshotted at a checkpoint and then ended
    must not look unfinished to the next catch-up."""
    deadline = time.monotonic() + 30
    while True:
        statuses = await _snapshot_statuses(options, batch_id)
        if not statuses["pending"] + statuses["running"] or time.monotonic() > deadline:
            return statuses
        await asyncio.sleep(0.2)


async def _wait_steps_completed(options: DistributedOptions, batch_id: str, count: int,
                                timeout_s: float, cluster: AgentsCluster) -> int:
    deadline = time.monotonic() + timeout_s
    while (done := await _steps_completed(options, batch_id)) < count:
        cluster.assert_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"only {done} of {count} steps completed in {timeout_s} s")
        await asyncio.sleep(0.02)
    return done


async def _journal(options: DistributedOptions) -> dict[str, list[Event]]:
    """Every run's events, read back from every journal partition on Kafka."""
    runs: dict[str, list[Event]] = defaultdict(list)
    for partition in range(options.partitions):
        async for _offset, event in read_partition(
            options.bootstrap_servers, options.topics.journal, partition
        ):
            runs[event.run_id].append(event)
    return runs


async def _journal_records(options: DistributedOptions) -> int:
    total = 0
    for partition in range(options.partitions):
        async for _ in read_partition(options.bootstrap_servers, options.topics.journal,
                                      partition):
            total += 1
    return total


async def _crash_during_batch(cluster: AgentsCluster, kill, restart) -> tuple[  # type: ignore[no-untyped-def]
        DistributedOptions, dict[str, list[Event]]]:
    config = load_config(cluster.config_path, {})
    options = distributed_options(config)
    batch_id = f"crash-{uuid.uuid4().hex[:8]}"
    async with DistributedClient(options, config) as client:
        await _submit_batch(client, batch_id)
        # Strike while the batch is under way. Tasks are served in order, so every run's
        # first step tends to go before any run's second: runs finish in a burst at the end,
        # and progress is counted in steps, not in finished runs.
        steps = RUNS * STEPS
        await _wait_steps_completed(options, batch_id, steps // 5, timeout_s=120,
                                    cluster=cluster)
        done_at_kill = await _steps_completed(options, batch_id)
        print(f"killing with {done_at_kill} of {steps} steps completed")
        assert done_at_kill < steps * 0.8, "the batch ended before the crash: nothing was tested"
        kill()
        await asyncio.sleep(0.5)
        restart()
        await _wait_finished(options, batch_id, RUNS, timeout_s=240, cluster=cluster)
        results = {}
        for index in range(RUNS):
            results[index] = await client.result(f"{batch_id}-{index}")
    for index, result in results.items():
        assert result is not None and result.ok, (index, result)
        assert result.result == index + 5, (index, result)
    journal = await _journal(options)
    ours = {run_id: events for run_id, events in journal.items() if run_id.startswith(batch_id)}
    assert len(ours) == RUNS
    for run_id, events in ours.items():
        assert [e.seq for e in events] == list(range(len(events))), run_id
        completed = Counter(e.step_id for e in events if isinstance(e, StepCompleted))
        assert completed == {f"s{i}": 1 for i in range(1, 6)}, (run_id, completed)
        assert fold(run_id, events).result == results[int(run_id.rsplit("-", 1)[1])]
    statuses = await _wait_no_unfinished_snapshots(options, batch_id)
    assert statuses["pending"] + statuses["running"] == 0, statuses
    # Checkpoints came while runs were under way, so some runs were snapshotted unfinished.
    assert statuses["completed"] > 0, statuses
    return options, ours


async def test_kill_9_of_the_orchestrator(cluster_factory, component_server, driver) -> None:  # type: ignore[no-untyped-def]
    cluster = _cluster(cluster_factory, component_server, driver)

    def restart() -> None:
        cluster.start(ORCHESTRATOR)

    options, _ = await _crash_during_batch(cluster, lambda: cluster.kill(ORCHESTRATOR), restart)
    reports = cluster.catch_up_reports(ORCHESTRATOR)
    print("catch-up reports:", reports)
    assert sorted(r["partition"] for r in reports) == list(range(options.partitions))
    total = await _journal_records(options)
    read = sum(r["events_read"] for r in reports)
    # The new orchestrator started from its checkpoints, not from the start of the journal.
    assert any(r["from_offset"] > 0 for r in reports), reports
    assert read < total, (read, total, reports)
    assert sum(r["snapshots_loaded"] for r in reports) > 0, reports


async def test_kill_9_of_a_worker(cluster_factory, component_server, driver) -> None:  # type: ignore[no-untyped-def]
    cluster = _cluster(cluster_factory, component_server, driver)
    await _crash_during_batch(
        cluster, lambda: cluster.kill("worker:crash"), lambda: cluster.start("worker:crash")
    )


async def test_kill_9_of_the_component_server(cluster_factory, component_server, driver) -> None:  # type: ignore[no-untyped-def]
    cluster = _cluster(cluster_factory, component_server, driver)
    await _crash_during_batch(cluster, component_server.kill, component_server.start)

"""stepflow-stream's side of the distributed section: real agents on the local broker.

Starts ``stepflow-stream agents`` as two processes (the orchestrator, and the worker of the
``builtin`` class), then measures:

- ``chain10_p50_ms`` / ``chain10_p99_ms``: a flow of 10 chained ``/builtin/noop`` steps run
  alone, ``--runs`` times, from the client's submit to its ``RunCompleted`` on the journal
  topic (committed: what a replay would read);
- ``runs_per_s``: ``--items`` one-noop-step runs submitted at once, from the first submit to
  the last ``RunCompleted`` on the journal topic.

Prints one JSON object (see ``stepflow_distributed`` in ``__main__``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from stepflow_stream.config import load_config
from stepflow_stream.core.events import RunCompleted, RunFailed
from stepflow_stream.core.flow import Flow, parse_flow_text
from stepflow_stream.distributed.client import DistributedClient
from stepflow_stream.distributed.options import DistributedOptions, distributed_options
from stepflow_stream.journal.codec import decode_event

PARTITIONS = 2
WORKER_CONCURRENCY = 512
_READY = "[^Worker]: Ready"


def _chain(steps: int) -> Flow:
    lines = ["schema: https://stepflow.org/schemas/v1/flow.json", f"name: chain{steps}",
             "steps:", "  - {id: s1, component: /builtin/noop, input: {}}"]
    lines += [f"  - {{id: s{i}, component: /builtin/noop, input: {{after: {{$step: s{i - 1}}}}}}}"
              for i in range(2, steps + 1)]
    lines.append(f"output: {{$step: s{steps}}}")
    return parse_flow_text("\n".join(lines) + "\n", f"chain{steps}.yaml")


def _write_config(root: Path, env: dict[str, str]) -> Path:
    config = root / "stepflow-config.yml"
    prefix = uuid.uuid4().hex[:8]
    schema = f"bench_{prefix}"
    config.write_text(json.dumps({
        "plugins": {"builtin": {"type": "builtin"}},
        "routes": {"/builtin/{*component}": [{"plugin": "builtin"}]},
        "runtime": {
            "type": "kafka", "bootstrapServers": env["STEPFLOW_KAFKA_BOOTSTRAP"],
            "topicPrefix": f"bench-{prefix}.", "partitions": PARTITIONS,
            "taskPartitions": PARTITIONS,
            "workers": {"builtin": {"concurrency": WORKER_CONCURRENCY}},
        },
        "stateStore": {"type": "postgres",
                       "databaseUrl": f"{env['STEPFLOW_POSTGRES_URL']}?search_path={schema}"},
    }))
    return config


def _start_agents(
    root: Path, config: Path, driver: str
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    agents = []
    for name, role in [("orchestrator", ["--orchestrator-only"]),
                       ("worker", ["--no-orchestrator", "--classes", "builtin"])]:
        log = root / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "stepflow_stream", "agents", "--config", str(config),
                 "--data-dir", str(root / "faust"), "--log-level", "info",
                 "--driver", driver, *role],
                stdout=out, stderr=subprocess.STDOUT, cwd=root,
            )
        agents.append((process, log))
    deadline = time.monotonic() + 60
    for process, log in agents:
        while _READY not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                _stop_agents(agents)
                raise SystemExit(f"agent did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
    return agents


def _stop_agents(agents: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    for process, _ in agents:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process, _ in agents:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class _Endings:
    """Watches the journal topic for runs' terminal events."""

    def __init__(self, options: DistributedOptions) -> None:
        self.options = options
        self.ended: dict[str, float] = {}
        self.waiters: dict[str, asyncio.Future[float]] = {}
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=options.bootstrap_servers, enable_auto_commit=False,
            isolation_level="read_committed", fetch_max_wait_ms=5,
        )
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        partitions = [TopicPartition(self.options.topics.journal, p)
                      for p in range(self.options.partitions)]
        self.consumer.assign(partitions)
        await self.consumer.seek_to_end(*partitions)
        for tp in partitions:  # resolve the positions now, before any run is submitted
            await self.consumer.position(tp)
        self.task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    assert record.value is not None
                    event = decode_event(record.value)
                    if isinstance(event, RunCompleted | RunFailed):
                        self.ended[event.run_id] = now
                        waiter = self.waiters.pop(event.run_id, None)
                        if waiter is not None and not waiter.done():
                            waiter.set_result(now)

    def wait(self, run_id: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if run_id in self.ended:
            future.set_result(self.ended[run_id])
        else:
            self.waiters[run_id] = future
        return future

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        await self.consumer.stop()


async def _measure(config_path: Path, items: int, runs: int) -> dict[str, Any]:
    config = load_config(config_path, os.environ)
    options = distributed_options(config)
    chain, one = _chain(10), _chain(1)
    endings = _Endings(options)
    async with DistributedClient(options, config) as client:
        await endings.start()
        try:
            for _ in range(20):  # warm-up: connections, flow blobs, plans
                await endings.wait(await client.submit(chain, {}))
            latencies = []
            for _ in range(runs):
                started = time.perf_counter()
                run_id = await client.submit(chain, {})
                latencies.append((await endings.wait(run_id)) - started)
            await endings.wait(await client.submit(one, {}))
            started = time.perf_counter()
            run_ids = await client.submit_many(one, [{"i": i} for i in range(items)])
            submitted = time.perf_counter() - started
            finished = max(await asyncio.gather(*(endings.wait(r) for r in run_ids)))
            results = [await client.wait(run_ids[0], 30), await client.wait(run_ids[-1], 30)]
            assert all(r.ok for r in results), results
        finally:
            await endings.stop()
    latencies.sort()
    return {
        "chain10_p50_ms": statistics.median(latencies) * 1000,
        "chain10_p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
        "runs_per_s": items / (finished - started),
        "submit_per_s": items / submitted,
    }


async def _drop_deployment(env: dict[str, str], config_path: Path) -> None:
    """Drop the deployment's database schema and delete its topics: a broker that keeps every
    benchmark's topics gets slower for the next one."""
    import asyncpg
    from aiokafka.admin import AIOKafkaAdminClient

    settings = json.loads(config_path.read_text())
    schema = settings["stateStore"]["databaseUrl"].split("=")[-1]
    connection = await asyncpg.connect(env["STEPFLOW_POSTGRES_URL"])
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()
    prefix = settings["runtime"]["topicPrefix"]
    admin = AIOKafkaAdminClient(bootstrap_servers=env["STEPFLOW_KAFKA_BOOTSTRAP"])
    await admin.start()
    try:
        ours = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if ours:
            await admin.delete_topics(ours)
    finally:
        await admin.close()


def _measure_driver(driver: str, env: dict[str, str], items: int, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="stepflow-bench-") as work:
        root = Path(work)
        config = _write_config(root, env)
        agents = _start_agents(root, config, driver)
        try:
            figures = asyncio.run(_measure(config, items, runs))
        finally:
            _stop_agents(agents)
            asyncio.run(_drop_deployment(env, config))
    figures["label"] = f"{driver} driver, {PARTITIONS} partitions"
    return figures


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--drivers", default="faust,direct",
                        help="comma-separated: faust (the default of `agents`), direct")
    args = parser.parse_args()
    env = dict(os.environ)
    drivers = [d.strip() for d in args.drivers.split(",") if d.strip()]
    figures = _measure_driver(drivers[0], env, args.items, args.runs)
    # Further drivers ride along under their own names, for a column each.
    for driver in drivers[1:]:
        figures[driver] = _measure_driver(driver, env, args.items, args.runs)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ingest section: records per second through ``stepflow-stream ingest`` and a 3-step flow
on the distributed runtime, with real agents on the local broker and PostgreSQL.

For each ingest driver: a fresh deployment (topic prefix, database schema) whose agents run
with the direct driver (the orchestrator and the ``builtin`` worker, one process each), an
input topic of ``--partitions`` partitions, and the ingest agent as a process of its own.
Each round produces ``--records`` records to the input topic while the ingest runs, and
measures from the first record produced to the last result read (``read_committed``) from the
output topic: records/s of the round. The figure is the median of ``--rounds`` rounds.

The baseline, ``client``, is the same cluster (a deployment of its own, the same agents)
running the same runs without the ingest: each round submits ``--records`` runs of the flow
with ``DistributedClient.submit_many`` and ends when the run index has them all finished. The
ratio of an ingest driver's figure to it is what the ingest costs on top of the runs.

Prints one JSON object: ``{"client": {...}, "direct": {...}, "faust": {...}}`` with, per
measure, ``records_per_s`` (the median), ``rounds`` (each round's figure) and ``records``.
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
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from benchmarks.distributed_side import _drop_deployment, _start_agents, _stop_agents, _write_config
from stepflow_stream.config import load_config
from stepflow_stream.core.flow import parse_flow_text
from stepflow_stream.distributed.client import DistributedClient
from stepflow_stream.distributed.options import distributed_options

_READY = "[^Worker]: Ready"
FLOW = """\
schema: https://stepflow.org/schemas/v1/flow.json
name: three_noops
steps:
  - {id: a, component: /builtin/noop, input: {n: {$input: n}}}
  - {id: b, component: /builtin/noop, input: {after: {$step: a}}}
  - {id: c, component: /builtin/noop, input: {after: {$step: b}}}
output: {n: {$input: n}, last: {$step: c}}
"""


def _start_ingest(root: Path, config: Path, driver: str, from_topic: str, to_topic: str,
                  max_in_flight: int) -> subprocess.Popen[bytes]:
    flow = root / "three_noops.yaml"
    flow.write_text(FLOW)
    log = root / "ingest.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "stepflow_stream", "ingest", "--flow", str(flow),
             "--config", str(config), "--from-topic", from_topic, "--to-topic", to_topic,
             "--driver", driver, "--max-in-flight", str(max_in_flight),
             "--data-dir", str(root / "faust")],
            stdout=out, stderr=subprocess.STDOUT, cwd=root,
        )
    deadline = time.monotonic() + 60
    while _READY not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            raise SystemExit(f"ingest did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def _rounds(bootstrap: str, from_topic: str, to_topic: str, records: int,
                  rounds: int, partitions: int) -> list[float]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed", fetch_max_wait_ms=20)
    await producer.start()
    await consumer.start()
    try:
        consumer.assign([TopicPartition(to_topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        # Warm-up: the ingest's consumer group forms and its first runs pass.
        await _round(producer, consumer, from_topic, 200, 0)
        figures = []
        for number in range(rounds):
            started = time.perf_counter()
            await _round(producer, consumer, from_topic, records, (number + 1) * records)
            figures.append(records / (time.perf_counter() - started))
        return figures
    finally:
        await consumer.stop()
        await producer.stop()


async def _round(producer: AIOKafkaProducer, consumer: AIOKafkaConsumer, topic: str,
                 records: int, first: int) -> None:
    sends = [await producer.send(topic, json.dumps({"n": first + i}).encode(),
                                 key=f"key-{i % 64}".encode()) for i in range(records)]
    await asyncio.gather(*sends)
    seen = 0
    deadline = time.monotonic() + 300
    while seen < records:
        batches = await consumer.getmany(timeout_ms=200)
        seen += sum(len(batch) for batch in batches.values())
        if time.monotonic() > deadline:
            raise SystemExit(f"only {seen} of {records} results after 300 s")


async def _client_rounds(config_path: Path, records: int, rounds: int) -> list[float]:
    config = load_config(config_path, os.environ)
    flow = parse_flow_text(FLOW, "three_noops.yaml")
    figures = []
    async with DistributedClient(distributed_options(config), config) as client:
        assert client.database is not None
        for number in range(rounds + 1):  # the first is a warm-up, as in the ingest rounds
            count = 200 if number == 0 else records
            batch_id = f"client-{number}"
            started = time.perf_counter()
            await client.submit_many(flow, [{"n": i} for i in range(count)], batch_id=batch_id)
            while await client.database.pool.fetchval(
                "SELECT count(*) FROM runs WHERE batch_id = $1 "
                "AND status NOT IN ('pending', 'running')", batch_id,
            ) < count:
                await asyncio.sleep(0.02)
            if number:
                figures.append(count / (time.perf_counter() - started))
    return figures


def _measure_client(env: dict[str, str], records: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="stepflow-bench-ingest-") as work:
        root = Path(work)
        config = _write_config(root, env)
        agents = _start_agents(root, config, "direct")
        try:
            figures = asyncio.run(_client_rounds(config, records, rounds))
        finally:
            _stop_agents(agents)
            asyncio.run(_drop_deployment(env, config))
    return {"records_per_s": statistics.median(figures), "rounds": figures, "records": records}


def _measure_driver(driver: str, env: dict[str, str], records: int, rounds: int,
                    partitions: int, max_in_flight: int) -> dict[str, Any]:
    bootstrap = env["STEPFLOW_KAFKA_BOOTSTRAP"]
    with tempfile.TemporaryDirectory(prefix="stepflow-bench-ingest-") as work:
        root = Path(work)
        config = _write_config(root, env)
        prefix = json.loads(config.read_text())["runtime"]["topicPrefix"]
        from_topic, to_topic = f"{prefix}in", f"{prefix}out"
        asyncio.run(_create_topic(bootstrap, from_topic, partitions))
        agents = _start_agents(root, config, "direct")
        ingest = None
        try:
            ingest = _start_ingest(root, config, driver, from_topic, to_topic, max_in_flight)
            figures = asyncio.run(_rounds(bootstrap, from_topic, to_topic, records, rounds,
                                          partitions))
        finally:
            if ingest is not None:
                _stop(ingest)
            _stop_agents(agents)
            asyncio.run(_drop_deployment(env, config))
    return {"records_per_s": statistics.median(figures), "rounds": figures,
            "records": records, "partitions": partitions, "max_in_flight": max_in_flight}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=5000, help="records per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=4, help="of the input topic")
    parser.add_argument("--max-in-flight", type=int, default=1000)
    parser.add_argument("--drivers", default="direct,faust",
                        help="comma-separated ingest drivers: direct, faust")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the client baseline")
    args = parser.parse_args()
    env = dict(os.environ)
    figures: dict[str, dict[str, Any]] = {}
    if not args.no_baseline:
        figures["client"] = _measure_client(env, args.records, args.rounds)
    figures |= {driver: _measure_driver(driver, env, args.records, args.rounds,
                                       args.partitions, args.max_in_flight)
               for driver in (d.strip() for d in args.drivers.split(",")) if driver}
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

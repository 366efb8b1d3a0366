"""``stepflow-stream ingest``: one run per record of a topic, results produced exactly once.

Real agents (orchestrator and builtin worker processes), the real broker and PostgreSQL, and
the ingest agent as a real subprocess that is ``kill -9``-ed in the middle of 5,000 records
and started again: the output topic then holds exactly one result per input record, in order
per key, with the right value, and no run ran twice. Bad records and failed runs go to the
dead-letter topic (or, without one, to the output topic) with the error, the record's
coordinates and its value.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from agents_cluster import ORCHESTRATOR, AgentsCluster
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete

from stepflow_stream.cli.main import main
from stepflow_stream.config import load_config
from stepflow_stream.core.flow import parse_flow_text
from stepflow_stream.distributed.client import DistributedClient
from stepflow_stream.distributed.ingest import (
    Ingestor,
    IngestSettings,
    default_group,
    ingest_run_id,
)
from stepflow_stream.distributed.options import distributed_options

RECORDS = 5000
KEYS = 12
IN_PARTITIONS = 4
PLUGINS = {
    "plugins": {"builtin": {"type": "builtin"}},
    "routes": {"/builtin/{*component}": [{"plugin": "builtin"}]},
}
# Three steps; the output names the input's n, so a result can be matched to its record.
FLOW = """\
schema: https://stepflow.org/schemas/v1/flow.json
name: ingest_three_steps
schemas:
  type: object
  properties:
    input:
      type: object
      required: [n, delay]
      properties:
        n: {type: integer}
        delay: {type: number}
steps:
  - id: a
    component: /builtin/sleep
    input: {duration_ms: {$input: delay}, passthrough: {n: {$input: n}}}
  - id: b
    component: /builtin/sleep
    input: {duration_ms: 0, passthrough: {$step: a}}
  - id: c
    component: /builtin/sleep
    input: {duration_ms: 0, passthrough: {$step: b}}
output: {n: {$step: c, path: n}, twice: [{$step: a, path: n}, {$step: b, path: n}]}
"""


@dataclass(frozen=True)
class Produced:
    key: bytes | None
    value: bytes
    partition: int
    offset: int


@dataclass
class Ingest:
    """The ingest agent as a subprocess of its own."""

    cluster: AgentsCluster
    flow: Path
    from_topic: str
    to_topic: str
    dead_letter_topic: str | None = None
    max_in_flight: int = 1000
    driver: str = "direct"
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.cluster.root / f"ingest-{self.to_topic}.log"

    @property
    def group(self) -> str:
        return default_group(self.cluster.prefix, self.from_topic, self.to_topic)

    def start(self) -> None:
        command = [sys.executable, "-m", "stepflow_stream", "ingest", "--flow", str(self.flow),
                   "--config", str(self.cluster.config_path), "--from-topic", self.from_topic,
                   "--to-topic", self.to_topic, "--max-in-flight", str(self.max_in_flight),
                   "--driver", self.driver, "--data-dir", str(self.cluster.root / "faust")]
        if self.dead_letter_topic is not None:
            command += ["--dead-letter-topic", self.dead_letter_topic]
        before = self.log_path.read_text() if self.log_path.exists() else ""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.cluster.root,
                                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.starts += 1
        deadline = time.monotonic() + 60
        while "[^Worker]: Ready" not in self.log_path.read_text()[len(before):]:
            assert self.process.poll() is None, f"ingest exited:\n{self.log()}"
            assert time.monotonic() < deadline, f"ingest not ready:\n{self.log()}"
            time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def assert_alive(self) -> None:
        assert self.process is not None and self.process.poll() is None, \
            f"ingest exited with {self.process and self.process.returncode}:\n{self.log()}"


@pytest.fixture
def ingests():  # type: ignore[no-untyped-def]
    made: list[Ingest] = []
    yield made
    for ingest in made:
        ingest.stop()


def _cluster(cluster_factory) -> AgentsCluster:  # type: ignore[no-untyped-def]
    cluster: AgentsCluster = cluster_factory(
        driver="direct", plugins_document=PLUGINS, partitions=2, task_partitions=2,
        workers={"builtin": {"concurrency": 512}},
    )
    cluster.start_all([ORCHESTRATOR, "worker:builtin"])
    return cluster


def _flow(root: Path) -> Path:
    path = root / "three_steps.yaml"
    path.write_text(FLOW)
    return path


async def _create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str,
                   records: list[tuple[bytes | None, bytes]]) -> list[Produced]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [Produced(key, value, m.partition, m.offset)
            for (key, value), m in zip(records, metadata, strict=True)]


class TopicReader:
    """Reads a topic ``read_committed`` from the beginning, in the background."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.records: list[Any] = []
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                         isolation_level="read_committed",
                                         auto_offset_reset="earliest", fetch_max_wait_ms=50)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        partitions = self.consumer.partitions_for_topic(self.topic)
        while not partitions:
            await asyncio.sleep(0.1)
            await self.consumer._client.force_metadata_update()
            partitions = self.consumer.partitions_for_topic(self.topic)
        self.consumer.assign([TopicPartition(self.topic, p) for p in sorted(partitions)])
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100)
            for records in batches.values():
                self.records.extend(records)

    async def caught_up(self) -> None:
        """Wait until everything committed so far has been read."""
        tps = list(self.consumer.assignment())
        ends = await self.consumer.end_offsets(tps)
        for tp in tps:
            while await self.consumer.position(tp) < ends[tp]:
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        await self.consumer.stop()


async def _wait_for(condition, timeout_s: float, what: str, *alive: Ingest) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        for ingest in alive:
            ingest.assert_alive()
        assert time.monotonic() < deadline, f"{what} after {timeout_s} s"
        await asyncio.sleep(0.05)


async def _finished_runs(cluster: AgentsCluster, ingest: Ingest) -> int:
    connection = await asyncpg.connect(cluster.database_url)
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM runs WHERE run_id LIKE $1 AND finished_at IS NOT NULL",
            f"{ingest.group}:%")
        return count
    finally:
        await connection.close()


async def _committed_to_end(bootstrap: str, ingest: Ingest) -> None:
    """Wait until the ingest's group has committed every input offset."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await consumer.start()
    await admin.start()
    try:
        tps = [TopicPartition(ingest.from_topic, p) for p in range(IN_PARTITIONS)]
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + 60
        while True:
            committed = await admin.list_consumer_group_offsets(ingest.group, partitions=tps)
            if all(committed[tp].offset == ends[tp] for tp in tps):
                return
            ingest.assert_alive()
            assert time.monotonic() < deadline, f"offsets {committed} never reached {ends}"
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
        await consumer.stop()


@pytest.mark.parametrize("driver", ["direct", "faust"])
async def test_kill_9_in_the_middle_leaves_one_result_per_record_in_order(
    cluster_factory, ingests, driver: str  # type: ignore[no-untyped-def]
) -> None:
    cluster = _cluster(cluster_factory)
    bootstrap = cluster.kafka_bootstrap
    topics = f"{cluster.prefix}in", f"{cluster.prefix}out"
    await _create_topic(bootstrap, topics[0], IN_PARTITIONS)
    records = [(f"key-{i % KEYS}".encode(), json.dumps({"n": i, "delay": 0}).encode())
               for i in range(RECORDS)]
    produced = await _produce(bootstrap, topics[0], records)
    ingest = Ingest(cluster, _flow(cluster.root), *topics, max_in_flight=300, driver=driver)
    ingests.append(ingest)
    ingest.start()
    out = TopicReader(bootstrap, topics[1])
    await out.start()
    try:
        await _wait_for(lambda: len(out.records) >= RECORDS // 10, 90,
                        "no tenth of the results", ingest)
        ingest.kill()
        await asyncio.sleep(1.0)  # a commit the broker had when the process died lands now
        await out.caught_up()
        at_kill = len(out.records)
        assert RECORDS // 10 <= at_kill < RECORDS // 2, f"{at_kill} results at the kill"
        # Runs submitted before the kill went on: the restarted agent must fetch their
        # results, not run them again.
        assert await _finished_runs(cluster, ingest) > at_kill

        ingest.start()
        await _wait_for(lambda: len(out.records) >= RECORDS, 90,
                        "not every result", ingest)
        await _committed_to_end(bootstrap, ingest)
        await out.caught_up()
        results = list(out.records)
    finally:
        await out.stop()

    by_source = {(r["source"]["partition"], r["source"]["offset"]): r
                 for r in (json.loads(record.value) for record in results)}
    assert len(results) == RECORDS and len(by_source) == RECORDS, "a duplicate result"
    for record in produced:
        result = by_source[(record.partition, record.offset)]
        n = json.loads(record.value)["n"]
        assert result == {
            "outcome": "success", "result": {"n": n, "twice": [n, n]},
            "runId": ingest_run_id(ingest.group, topics[0], record.partition, record.offset),
            "source": {"topic": topics[0], "partition": record.partition,
                       "offset": record.offset},
        }
    # In order per key: each key's results, as the output topic holds them, follow the order
    # of its records on the input topic.
    expected: dict[bytes | None, list[int]] = defaultdict(list)
    for record in sorted(produced, key=lambda r: (r.partition, r.offset)):
        expected[record.key].append(json.loads(record.value)["n"])
    seen: dict[bytes | None, list[int]] = defaultdict(list)
    for record in sorted(results, key=lambda r: (r.partition, r.offset)):
        seen[record.key].append(json.loads(record.value)["result"]["n"])
    assert seen == expected
    # No record ran twice: each run's three steps completed once in its journal.
    connection = await asyncpg.connect(cluster.database_url)
    try:
        steps = await connection.fetchval(
            "SELECT count(*) FROM journal WHERE type = 'StepCompleted' AND run_id LIKE $1",
            f"{ingest.group}:%")
        created = await connection.fetchval(
            "SELECT count(*) FROM runs WHERE run_id LIKE $1", f"{ingest.group}:%")
    finally:
        await connection.close()
    assert (created, steps) == (RECORDS, 3 * RECORDS)
    assert "ingest: own partitions" in ingest.log()


async def test_bad_records_and_failed_runs_go_to_the_dead_letter_topic(
    cluster_factory, ingests  # type: ignore[no-untyped-def]
) -> None:
    cluster = _cluster(cluster_factory)
    bootstrap = cluster.kafka_bootstrap
    from_topic = f"{cluster.prefix}in"
    await _create_topic(bootstrap, from_topic, 1)
    values: list[bytes | None] = [
        b'{"n": 1, "delay": 0}',
        b"{not json",
        b'{"n": "two", "delay": 0}',
        b"\xff\xfe",
        None,
        b'{"n": 5, "delay": -1}',
        b'{"n": 6, "delay": 0}',
    ]
    produced = await _produce(bootstrap, from_topic, [(b"k", v) for v in values])  # type: ignore[misc]
    flow = _flow(cluster.root)
    # With a dead-letter topic, and without one (failures then go to the output topic).
    with_dlq = Ingest(cluster, flow, from_topic, f"{cluster.prefix}out",
                      dead_letter_topic=f"{cluster.prefix}dlq")
    without = Ingest(cluster, flow, from_topic, f"{cluster.prefix}out2")
    ingests.extend([with_dlq, without])
    with_dlq.start()
    without.start()
    readers = {name: TopicReader(bootstrap, f"{cluster.prefix}{name}")
               for name in ("out", "dlq", "out2")}
    for reader in readers.values():
        await reader.start()
    try:
        await _wait_for(lambda: (len(readers["out"].records), len(readers["dlq"].records),
                                 len(readers["out2"].records)) == (2, 5, 7),
                        60, "not every record came out", with_dlq, without)
    finally:
        for reader in readers.values():
            await reader.stop()

    def source(index: int) -> dict[str, Any]:
        return {"topic": from_topic, "partition": 0, "offset": produced[index].offset}

    def run_id(ingest: Ingest, index: int) -> str:
        return ingest_run_id(ingest.group, from_topic, 0, produced[index].offset)

    def failures(ingest: Ingest) -> list[dict[str, Any]]:
        return [
            {"outcome": "failed", "runId": None, "source": source(1), "value": "{not json",
             "code": "INVALID_INPUT", "says": "not valid JSON"},
            {"outcome": "failed", "runId": None, "source": source(2),
             "value": '{"n": "two", "delay": 0}', "code": "INVALID_INPUT",
             "says": "does not match the input schema"},
            {"outcome": "failed", "runId": None, "source": source(3), "valueBase64": "//4=",
             "code": "INVALID_INPUT", "says": "not valid JSON"},
            {"outcome": "failed", "runId": None, "source": source(4), "value": None,
             "code": "INVALID_INPUT", "says": "no value"},
            {"outcome": "failed", "runId": run_id(ingest, 5), "source": source(5),
             "value": '{"n": 5, "delay": -1}', "code": "INVALID_INPUT", "says": "duration_ms"},
        ]

    def successes(ingest: Ingest) -> list[dict[str, Any]]:
        return [{"outcome": "success", "result": {"n": n, "twice": [n, n]},
                 "runId": run_id(ingest, index), "source": source(index)}
                for index, n in ((0, 1), (6, 6))]

    def shown(records: list[Any]) -> list[dict[str, Any]]:
        """Each record as JSON, a failure's error as its code and whether the message says
        what it should (the expected ``says``)."""
        shown = []
        for record in records:
            assert record.key == b"k"
            value = json.loads(record.value)
            if value["outcome"] == "failed":
                error = value.pop("error")
                value["code"] = error["code"]
                value["message"] = error["message"]
            shown.append(value)
        return shown

    def matches(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
        assert len(actual) == len(expected), actual
        for got, want in zip(actual, expected, strict=True):
            says = want.pop("says", None)
            message = got.pop("message", None)
            if says is not None:
                assert says in message, (message, says)
            assert got == want

    matches(shown(readers["out"].records), successes(with_dlq))
    matches(shown(readers["dlq"].records), failures(with_dlq))
    # Without a dead-letter topic: every record's outcome on the output topic, in order.
    expected = failures(without)
    expected_successes = successes(without)
    matches(shown(readers["out2"].records),
            [expected_successes[0], *expected, expected_successes[1]])


@pytest.mark.parametrize(("arguments", "says"), [
    (["--flow", "missing.yaml"], "missing.yaml: file not found"),
    (["--flow", "{bad}"], "bad.yaml"),
    (["--from-topic", None], "--from-topic"),
    (["--config", "embedded"], "runtime"),
    (["--to-topic", "in"], "--to-topic is --from-topic"),
    (["--from-topic", "no such topic!"], "not a Kafka topic name"),
    (["--max-in-flight", "0"], "--max-in-flight must be at least 1"),
])
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str | None],
    says: str,
) -> None:
    flow = _flow(tmp_path)
    (tmp_path / "bad.yaml").write_text("steps: [{id: a}]\n")
    cluster_config = tmp_path / "cluster.yml"
    cluster_config.write_text(json.dumps({
        **PLUGINS,
        "runtime": {"type": "kafka", "bootstrapServers": "127.0.0.1:1"},
        "stateStore": {"type": "postgres", "databaseUrl": "postgresql://u@127.0.0.1:1/d"},
    }))
    embedded_config = tmp_path / "embedded.yml"
    embedded_config.write_text(json.dumps(PLUGINS))
    options = {"--flow": str(flow), "--config": str(cluster_config), "--from-topic": "in",
               "--to-topic": "out"}
    name, value = arguments
    if value is None:
        del options[name]
    elif value == "{bad}":
        options[name] = str(tmp_path / "bad.yaml")
    elif value == "missing.yaml":
        options[name] = str(tmp_path / "missing.yaml")
    elif value == "embedded":
        options[name] = str(embedded_config)
    else:
        options[name] = value
    argv = ["ingest", *(part for pair in options.items() for part in pair)]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code  # type: ignore[assignment]
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert says in error, error


async def test_an_input_topic_that_does_not_exist_is_exit_2(
    tmp_path: Path, kafka_bootstrap: str, postgres_url: str
) -> None:
    flow = _flow(tmp_path)
    config = tmp_path / "cluster.yml"
    config.write_text(json.dumps({
        **PLUGINS,
        "runtime": {"type": "kafka", "bootstrapServers": kafka_bootstrap,
                    "topicPrefix": f"t{uuid.uuid4().hex[:10]}."},
        "stateStore": {"type": "postgres", "databaseUrl": postgres_url},
    }))
    completed = subprocess.run(
        [sys.executable, "-m", "stepflow_stream", "ingest", "--flow", str(flow), "--config",
         str(config), "--from-topic", f"nothing-{uuid.uuid4().hex[:8]}", "--to-topic", "out",
         "--driver", "direct"],
        capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.strip().splitlines()[-1].startswith("error: --from-topic: topic ")
    assert "does not exist" in completed.stderr


async def test_a_driver_out_of_step_with_the_committed_offset_is_put_back_in_step(
    cluster_factory  # type: ignore[no-untyped-def]
) -> None:
    """Records the driver hands over twice are dropped, records it skipped are asked for again
    (the driver is told where to seek), and offsets retention deleted are passed over."""
    cluster: AgentsCluster = cluster_factory(plugins_document=PLUGINS)  # no agents: no run ends
    bootstrap = cluster.kafka_bootstrap
    from_topic, to_topic = f"{cluster.prefix}in", f"{cluster.prefix}out"
    await _create_topic(bootstrap, from_topic, 1)
    await _create_topic(bootstrap, to_topic, 1)
    await _produce(bootstrap, from_topic, [(b"k", b"not json")] * 6)
    config = load_config(cluster.config_path, {})
    settings = IngestSettings(from_topic, to_topic, group=f"{cluster.prefix}g")
    flow = parse_flow_text(FLOW, "three_steps.yaml")
    fatal: list[BaseException] = []
    out = TopicReader(bootstrap, to_topic)
    await out.start()
    async with DistributedClient(distributed_options(config), config) as client:
        ingestor = Ingestor(settings, client, flow, on_fatal=fatal.append)
        await ingestor.start()
        try:
            assert await ingestor.assign({0}) == {0: 0}
            assert await ingestor.take(0, 1, b"k", b"not json") == 0  # 0 was skipped
            assert await ingestor.take(0, 0, b"k", b"not json") is None
            assert await ingestor.take(0, 0, b"k", b"not json") is None  # twice: dropped
            assert await ingestor.take(0, 1, b"k", b"not json") is None
            await _wait_for(lambda: len(out.records) == 2, 30, "not two results")
            await ingestor.revoke({0})
            assert await ingestor.assign({0}) == {0: 2}  # where the committed results end
            assert await ingestor.take(0, 1, b"k", b"not json") is None  # produced already
            assert await ingestor.take(0, 3, b"k", b"not json") == 2
            await ingestor.revoke({0})
            await _delete_records(bootstrap, TopicPartition(from_topic, 0), 4)
            assert await ingestor.assign({0}) == {0: 2}
            assert await ingestor.take(0, 4, b"k", b"not json") is None  # 2 and 3 are gone
            await _wait_for(lambda: len(out.records) == 3, 30, "not three results")
        finally:
            await ingestor.stop()
            await out.stop()
    assert [json.loads(r.value)["source"]["offset"] for r in out.records] == [0, 1, 4]
    assert fatal == []


async def _delete_records(bootstrap: str, tp: TopicPartition, before: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records({tp: RecordsToDelete(before)})
    finally:
        await admin.close()

"""One flow through real agents: the result, the journal on Kafka and its Postgres projection."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import re
import time
from pathlib import Path

import pytest
from agents_cluster import ORCHESTRATOR, AgentsCluster
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from fastavro import parse_schema, schemaless_writer

from stepflow_stream.cli.loading import load_flow
from stepflow_stream.config import load_config
from stepflow_stream.core.events import CancelRun
from stepflow_stream.core.flow import parse_flow_text
from stepflow_stream.core.state import fold
from stepflow_stream.distributed.client import DistributedClient
from stepflow_stream.distributed.options import distributed_options
from stepflow_stream.journal.codec import _fingerprint
from stepflow_stream.kafka.command_codec import (
    COMMAND_NAMESPACE,
    earlier_command_schemas,
    encode_command,
)
from stepflow_stream.kafka.journal_reader import read_run_from_kafka
from stepflow_stream.kafka.records import run_key

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello" / "flow.yaml"
PLUGINS = {
    "plugins": {"builtin": {"type": "builtin"}},
    "routes": {"/builtin/{*component}": [{"plugin": "builtin"}]},
}


@pytest.mark.parametrize("driver", ["faust", "direct"])
async def test_a_run_completes_and_its_journal_folds_to_its_result(
    cluster_factory, driver: str  # type: ignore[no-untyped-def]
) -> None:
    cluster: AgentsCluster = cluster_factory(plugins_document=PLUGINS, driver=driver)
    cluster.start_all([ORCHESTRATOR, "worker:builtin"])
    config = load_config(cluster.config_path, {})
    options = distributed_options(config)
    flow = load_flow(HELLO)
    async with DistributedClient(options, config) as client:
        run_id = await client.submit(flow, {"name": "world"})
        result = await client.wait(run_id, timeout_s=60)
        assert result.ok, result
        assert result.result["messages"][1] == {"role": "user", "content": "world"}
        from_postgres = await client.journal.read(run_id)
    from_kafka = await read_run_from_kafka(
        options.bootstrap_servers, options.topics, run_id, options.partitions
    )
    assert from_kafka == from_postgres
    assert fold(run_id, from_kafka).result == result
    assert fold(run_id, from_postgres).result == result


def _old_client_submit_run(run_id: str, flow_id: str, input: object) -> bytes:
    """A SubmitRun as a client of the release before forks wrote it (its schema lacks
    ``forked_from_step`` and ``reused``)."""
    [earlier] = earlier_command_schemas()
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(copy.deepcopy(earlier)), {
        "run_id": run_id,
        "payload": (f"{COMMAND_NAMESPACE}.SubmitRun", {
            "flow_id": flow_id, "input": json.dumps(input), "variables": "{}",
            "parent_run_id": None, "parent_step_id": None, "batch_id": None,
            "batch_index": None,
        }),
    })
    return b"\x01" + _fingerprint(earlier) + body.getvalue()


@pytest.mark.parametrize("driver", ["faust", "direct"])
async def test_records_that_are_no_commands_are_skipped_and_older_clients_are_understood(
    cluster_factory, driver: str  # type: ignore[no-untyped-def]
) -> None:
    cluster: AgentsCluster = cluster_factory(plugins_document=PLUGINS, driver=driver)
    cluster.start_all([ORCHESTRATOR, "worker:builtin"])
    orchestrator_pid = cluster.processes[ORCHESTRATOR].process.pid
    config = load_config(cluster.config_path, {})
    options = distributed_options(config)
    flow = load_flow(HELLO)
    async with DistributedClient(options, config) as client:
        before = await client.submit(flow, {"name": "before"})
        assert (await client.wait(before, timeout_s=60)).ok
        producer = AIOKafkaProducer(bootstrap_servers=options.bootstrap_servers)
        await producer.start()
        try:
            for partition in range(options.partitions):
                # Anybody can write to the commands topic: garbage, and a truncated command.
                await producer.send_and_wait(options.topics.commands, b"not a command",
                                             key=b"x", partition=partition)
                truncated = encode_command(CancelRun(before))[:-2]
                await producer.send_and_wait(options.topics.commands, truncated,
                                             key=b"x", partition=partition)
            # And to a task topic: a record that is no task.
            garbage_tasks = {}
            for partition in range(options.task_partitions):
                sent = await producer.send_and_wait(options.topics.tasks("builtin"),
                                                    b"not a task", partition=partition)
                garbage_tasks[partition] = sent.offset
            old_client_run = "old-client-run"
            await producer.send_and_wait(
                options.topics.commands,
                _old_client_submit_run(old_client_run, flow.flow_id, {"name": "old"}),
                key=run_key(old_client_run))
        finally:
            await producer.stop()
        after = await client.submit(flow, {"name": "after"})
        for run_id, name in [(old_client_run, "old"), (after, "after")]:
            result = await client.wait(run_id, timeout_s=60)
            assert result.ok, result
            assert result.result["messages"][1] == {"role": "user", "content": name}
    # The orchestrator skipped the records (it did not die on them and restart)...
    agent = cluster.processes[ORCHESTRATOR]
    assert agent.alive() and agent.process.pid == orchestrator_pid
    skipped = re.findall(r"skipped a record of the commands topic that is not a command",
                         agent.log())
    assert len(skipped) == 2 * options.partitions, agent.log()[-3000:]
    # ... and the worker skipped its garbage and committed past it.
    worker = cluster.processes["worker:builtin"]
    assert worker.alive()
    assert len(re.findall("skipped a task record", worker.log())) == options.task_partitions
    group = f"{options.topic_prefix}stepflow-worker-builtin"
    committed = await _committed_offsets(options.bootstrap_servers, group, timeout_s=20,
                                         at_least={TopicPartition(options.topics.tasks("builtin"),
                                                                  p): offset + 1
                                                   for p, offset in garbage_tasks.items()})
    assert committed, worker.log()[-3000:]


async def _committed_offsets(bootstrap: str, group: str, timeout_s: float,
                             at_least: dict[TopicPartition, int]) -> bool:
    """Whether ``group`` commits at least these offsets within ``timeout_s``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            offsets = await admin.list_consumer_group_offsets(group)
            if all(tp in offsets and offsets[tp].offset >= wanted
                   for tp, wanted in at_least.items()):
                return True
            await asyncio.sleep(0.2)
        return False
    finally:
        await admin.close()


ECHO_FLOW = """\
schema: https://stepflow.org/schemas/v1/flow.json
name: echo_large
steps:
  - {id: a, component: /builtin/noop, input: {text: {$input: text}}}
output: {text: {$input: text}, after: {$step: a}}
"""


async def test_a_run_whose_events_are_larger_than_a_record_batch_completes(
    cluster_factory,  # type: ignore[no-untyped-def]
) -> None:
    # 600 KB of input: RunCreated, the step's StepStarted (journal and task) and RunCompleted
    # are each larger than the orchestrator's 512 KB record batches, and under Kafka's 1 MB.
    cluster: AgentsCluster = cluster_factory(plugins_document=PLUGINS, driver="direct")
    cluster.start_all([ORCHESTRATOR, "worker:builtin"])
    config = load_config(cluster.config_path, {})
    options = distributed_options(config)
    text = "x" * 600_000
    async with DistributedClient(options, config) as client:
        run_id = await client.submit(parse_flow_text(ECHO_FLOW, "echo_large.yaml"),
                                     {"text": text})
        result = await client.wait(run_id, timeout_s=60)
    assert result.ok, result
    assert result.result == {"text": text, "after": {}}
    assert cluster.processes[ORCHESTRATOR].alive()

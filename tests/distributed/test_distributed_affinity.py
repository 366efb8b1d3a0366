"""Tasks on Kafka are keyed by their step's affinity key, else by their run id."""

from __future__ import annotations

from agents_cluster import ORCHESTRATOR, AgentsCluster
from aiokafka import AIOKafkaConsumer, TopicPartition

from stepflow_stream.config import load_config
from stepflow_stream.core.events import StepStarted
from stepflow_stream.core.flow import parse_flow_text
from stepflow_stream.distributed.client import DistributedClient
from stepflow_stream.distributed.options import distributed_options
from stepflow_stream.journal.codec import decode_event

PLUGINS = {
    "plugins": {"builtin": {"type": "builtin"}},
    "routes": {"/builtin/{*component}": [{"plugin": "builtin"}]},
}

FLOW = """
steps:
  - id: keyed
    component: /builtin/sleep
    affinity: {$input: user}
    input: {duration_ms: 0, passthrough: {$input: user}}
  - id: unkeyed
    component: /builtin/sleep
    input: {duration_ms: 0, passthrough: 1}
output: [{$step: keyed}, {$step: unkeyed}]
"""


async def task_records(
    bootstrap: str, topic: str, partition_count: int
) -> list[tuple[int, bytes, StepStarted]]:
    """Every task record of ``topic``: its partition, key and event."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(partition_count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records = []
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            for tp, batch in (await consumer.getmany(*partitions, timeout_ms=500)).items():
                for record in batch:
                    event = decode_event(record.value)
                    assert isinstance(event, StepStarted)
                    records.append((tp.partition, record.key, event))
        return records
    finally:
        await consumer.stop()


async def test_tasks_are_keyed_by_affinity_key_else_run_id(cluster_factory) -> None:
    cluster: AgentsCluster = cluster_factory(plugins_document=PLUGINS, task_partitions=4)
    cluster.start_all([ORCHESTRATOR, "worker:builtin"])
    config = load_config(cluster.config_path, {})
    options = distributed_options(config)
    flow = parse_flow_text(FLOW)
    async with DistributedClient(options, config) as client:
        run_ids = [await client.submit(flow, {"user": "u-1"}) for _ in range(3)]
        for run_id in run_ids:
            result = await client.wait(run_id, timeout_s=60)
            assert result.result == ["u-1", 1], result
    records = await task_records(
        options.bootstrap_servers, options.topics.tasks("builtin"), cluster.task_partitions
    )
    keyed = [(partition, key) for partition, key, event in records if event.step_id == "keyed"]
    assert len(keyed) == 3 and {key for _, key in keyed} == {b"u-1"}
    assert len({partition for partition, _ in keyed}) == 1
    unkeyed = {event.run_id: key for _, key, event in records if event.step_id == "unkeyed"}
    assert unkeyed == {run_id: run_id.encode() for run_id in run_ids}
    assert all(event.affinity == "u-1" for _, _, event in records if event.step_id == "keyed")

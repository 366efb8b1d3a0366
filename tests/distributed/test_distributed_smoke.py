"""One flow through real agents: the result, the journal on Kafka and its Postgres projection."""

from __future__ import annotations

from pathlib import Path

import pytest
from agents_cluster import ORCHESTRATOR, AgentsCluster

from stepflow_stream.cli.loading import load_flow
from stepflow_stream.config import load_config
from stepflow_stream.core.state import fold
from stepflow_stream.distributed.client import DistributedClient
from stepflow_stream.distributed.options import distributed_options
from stepflow_stream.kafka.journal_reader import read_run_from_kafka

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

"""The distributed settings read from a config's runtime and stateStore sections."""

from __future__ import annotations

import pytest

from stepflow_stream.config import parse_config_document
from stepflow_stream.distributed.options import (
    DistributedOptions,
    WorkerOptions,
    distributed_options,
)
from stepflow_stream.errors import ConfigError

PLUGINS = {"plugins": {"builtin": {"type": "builtin"}, "gpu": {"type": "mock"}},
           "routes": {"/builtin/{*c}": [{"plugin": "builtin"}], "/gpu/{*c}": [{"plugin": "gpu"}]}}


def _options(runtime: dict[str, object], store: dict[str, object] | None = None,
             env: dict[str, str] | None = None) -> DistributedOptions:
    document = {**PLUGINS, "runtime": runtime,
                "stateStore": store or {"type": "postgres", "databaseUrl": "postgresql://db"}}
    return distributed_options(parse_config_document(document, "c.yml", env or {}))


def test_settings_are_read_with_their_defaults() -> None:
    options = _options({"type": "kafka", "bootstrapServers": "k:9092"})
    assert options.bootstrap_servers == "k:9092"
    assert options.database_url == "postgresql://db"
    assert (options.topic_prefix, options.partitions, options.task_partitions) == ("", 4, 4)
    assert options.topics.commands == "stepflow.commands"
    assert options.worker("gpu") == WorkerOptions()


def test_every_setting_and_worker_class_is_read() -> None:
    options = _options({
        "type": "kafka", "bootstrapServers": "${KAFKA}", "topicPrefix": "prod.",
        "partitions": 8, "taskPartitions": 2, "transactionMaxMs": 0, "checkpointEvery": 50,
        "checkpointIntervalSeconds": 0.5, "sessionTimeoutSeconds": 12,
        "workers": {"gpu": {"concurrency": 2, "timeoutSeconds": 600}}, "agentDriver": "direct",
    }, env={"KAFKA": "a:1,b:2"})
    assert options.bootstrap_servers == "a:1,b:2"
    assert options.topics.journal == "prod.stepflow.journal"
    assert options.topics.tasks("gpu") == "prod.stepflow.tasks.gpu"
    assert (options.partitions, options.task_partitions, options.transaction_max_s) == (8, 2, 0)
    assert (options.checkpoint_every, options.checkpoint_interval_s) == (50, 0.5)
    assert options.session_timeout_s == 12
    assert options.worker("gpu") == WorkerOptions(concurrency=2, timeout_s=600)
    assert options.worker("builtin") == WorkerOptions()
    assert options.agent_driver == "direct"


@pytest.mark.parametrize(("runtime", "store", "expected"), [
    ({"type": "embedded"}, None, "selects 'embedded'"),
    ({"type": "kafka", "bootstrapServers": "k:1"}, {"type": "sqlite"}, "stateStore"),
    ({"type": "kafka"}, None, "'bootstrapServers' is required"),
    ({"type": "kafka", "bootstrapServers": "k:1", "partitions": 0}, None,
     "'partitions' is a positive integer, got 0"),
    ({"type": "kafka", "bootstrapServers": "k:1", "partitions": "4"}, None,
     "'partitions' is a positive integer"),
    ({"type": "kafka", "bootstrapServers": "k:1", "transactionMaxMs": -1}, None,
     "'transactionMaxMs' is a non-negative integer"),
    ({"type": "kafka", "bootstrapServers": "k:1", "workers": {"cpu": {}}}, None,
     "'workers.cpu' names no plugin (plugins: builtin, gpu)"),
    ({"type": "kafka", "bootstrapServers": "k:1", "workers": {"gpu": {"threads": 2}}}, None,
     "is {concurrency: N, timeoutSeconds: S}"),
    ({"type": "kafka", "bootstrapServers": "k:1", "agentDriver": "fast"}, None,
     "'agentDriver' is one of faust, direct, got 'fast'"),
    ({"type": "kafka", "bootstrapServers": "k:1", "partition": 4}, None,
     "unknown runtime setting 'partition'"),
])
def test_a_bad_setting_is_named(runtime: dict[str, object], store: dict[str, object] | None,
                                expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _options(runtime, store)
    assert expected in str(caught.value)
    assert "c.yml" in str(caught.value)

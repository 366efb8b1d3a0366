"""Gateway fixtures: configs on the real local Kafka and PostgreSQL (each test module with a
topic prefix and schema of its own), and the bearer tokens the tests use."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
import yaml
from gateway_support import PLUGINS, gateway_section

# AgentsCluster lives beside the distributed tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distributed"))


@pytest.fixture(scope="module")
def standalone_config(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str,
                      postgres_url: str) -> Path:
    """A config of a deployment without agents: runs are accepted, none progresses."""
    prefix = f"g{uuid.uuid4().hex[:10]}"
    document = {
        **PLUGINS,
        "runtime": {"type": "kafka", "bootstrapServers": kafka_bootstrap,
                    "topicPrefix": f"{prefix}.", "partitions": 2},
        "stateStore": {"type": "postgres",
                       "databaseUrl": f"{postgres_url}?search_path={prefix}"},
        "gateway": gateway_section(max_body_bytes=4096),
    }
    path = tmp_path_factory.mktemp("gateway") / "stepflow-config.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from agents_cluster import AgentsCluster


@pytest.fixture
def cluster_factory(
    tmp_path: Path, kafka_bootstrap: str, postgres_url: str
) -> Iterator[type[AgentsCluster]]:
    """Make AgentsCluster instances bound to this test's services; all stop at the end, and
    their topics are deleted."""
    made: list[AgentsCluster] = []

    def make(**kwargs: object) -> AgentsCluster:
        root = tmp_path / f"cluster{len(made)}"
        cluster = AgentsCluster(root, kafka_bootstrap, postgres_url, **kwargs)  # type: ignore[arg-type]
        made.append(cluster)
        return cluster

    yield make  # type: ignore[misc]
    for cluster in made:
        cluster.stop()
        cluster.delete_topics()

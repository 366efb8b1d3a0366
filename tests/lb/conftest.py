"""Fixtures: the load balancer in front of three real component servers found by DNS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lb_cluster import Cluster


@pytest.fixture(scope="module")
def cluster_once(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = Cluster(Path(tmp_path_factory.mktemp("lb")))
    yield started
    started.stop()


@pytest.fixture
def cluster(cluster_once: Cluster) -> Cluster:
    """The module's cluster, all three backends up (whatever the test before did)."""
    cluster_once.restore()
    return cluster_once

"""Fixtures: real component servers on loopback (see ``component_servers.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from component_servers import ServerProcess


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    """One server without a capacity limit, shared by a module's tests."""
    process = ServerProcess()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def other_server() -> Iterator[ServerProcess]:
    """A second server, to tell routes to two servers apart."""
    process = ServerProcess()
    yield process
    process.stop()


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerProcess]]:
    """Start servers for one test (they may be killed): ``start_server("--capacity", "1")``."""
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        started.append(ServerProcess(*args))
        return started[-1]

    yield start
    for process in started:
        process.stop()

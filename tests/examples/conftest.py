"""Fixtures: the three example component servers as real subprocesses (see
``examples_support.py``). The repository root goes on the import path so that the example
modules import as ``examples.components.*``, as ``serve-components`` imports them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from examples_support import REPO, ExampleServer, start_servers

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def example_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ExampleServer]]:
    """cpu, memory and ml servers on free ports, shared by every test that needs them."""
    servers = start_servers(Path(tmp_path_factory.mktemp("example-servers")))
    yield servers
    for server in servers.values():
        server.stop()

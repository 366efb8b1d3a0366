from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sdk_support import Caller, ServerProcess


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The sample components served by a real uvicorn subprocess."""
    server = ServerProcess(
        tmp_path_factory.mktemp("sdk") / "stderr.log", "--instance-id", "samples-1"
    )
    yield server
    server.stop()


@pytest.fixture
async def caller(samples: ServerProcess) -> AsyncIterator[Caller]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield Caller(client, samples.url)

"""Concurrency limit and graceful shutdown of a real component-server process."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sdk_support import HEADERS, Caller, ServerProcess


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The sample components with room for one execution at a time."""
    server = ServerProcess(tmp_path_factory.mktemp("busy") / "stderr.log", "--max-concurrency", "1")
    yield server
    server.stop()


async def test_at_capacity_execute_is_503_and_other_methods_still_answer(
    busy: ServerProcess,
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        caller = Caller(client, busy.url)
        racing = asyncio.gather(
            caller.execute("/slow", {"seconds": 0.8}), caller.execute("/slow", {"seconds": 0.8})
        )
        await asyncio.sleep(0.3)
        listed = await caller.rpc("components/list", {})
        assert listed.status_code == 200
        assert (await client.get(busy.url + "/health")).status_code == 200
        first, second = sorted(await racing, key=lambda execution: execution.status)

        assert (first.status, first.output) == (200, {"slept": 0.8})
        assert second.status == 503
        assert second.headers["retry-after"] == "1"
        assert second.error["code"] == -32000
        assert "capacity" in second.error["message"]
        assert second.error["data"] == {"retryable": True, "maxConcurrency": 1}

        after = await caller.execute("/add", {"a": 1, "b": 1})
        assert after.status == 200


async def test_a_caller_leaving_mid_stream_frees_the_slot(busy: ServerProcess) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "components/execute",
            "params": {
                "component": "/blobs/roundtrip",
                "input": {"value": 1},
                "attempt": 1,
                "observability": {},
            },
        }
        async with client.stream(
            "POST", busy.url, content=json.dumps(body).encode(), headers=HEADERS
        ) as response:
            async for line in response.aiter_lines():
                assert json.loads(line.removeprefix("data: "))["method"] == "blobs/put"
                break  # leave without answering the callback

        caller = Caller(client, busy.url)
        for _ in range(50):
            execution = await caller.execute("/add", {"a": 1, "b": 2})
            if execution.status == 200:
                break
            await asyncio.sleep(0.1)
        assert execution.output == {"sum": 3}


async def test_sigterm_lets_an_in_flight_execute_finish(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "stderr.log")
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            caller = Caller(client, server.url)
            assert (await caller.execute("/greet", {"name": "x"})).status == 200
            in_flight = asyncio.create_task(caller.execute("/slow", {"seconds": 1.5}))
            await asyncio.sleep(0.5)
            server.terminate()
            await asyncio.sleep(0.3)
            async with httpx.AsyncClient(timeout=2) as newcomer:
                with pytest.raises(httpx.ConnectError):
                    await newcomer.get(server.url + "/health")
            execution = await in_flight
        assert (execution.status, execution.output) == (200, {"slept": 1.5})
        assert await asyncio.to_thread(server.wait, 10) in (0, -signal.SIGTERM)
        assert server.process.stdout is not None
        assert server.process.stdout.read() == b""  # the port line was the only one
        assert "greeting x" in server.log.read_text()
    finally:
        server.stop()

"""The stepflow HTTP plugin called directly, against real component servers on loopback."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from component_servers import SERVER_SCRIPT, ServerProcess, StubContext, server_command

from stepflow_stream.config import RetryConfig
from stepflow_stream.core.jsonvalue import JSON, content_id
from stepflow_stream.errors import ComponentError, ErrorCode
from stepflow_stream.plugins.base import PluginOptions
from stepflow_stream.plugins.stepflow_http import StepflowHttpPlugin

FAST_RETRY = RetryConfig(transport_max_retries=3, backoff_min_delay_ms=20,
                         backoff_max_delay_ms=100)
NO_RETRY = RetryConfig(transport_max_retries=0)


def make_plugin(retry: RetryConfig = FAST_RETRY, **settings: Any) -> StepflowHttpPlugin:
    return StepflowHttpPlugin(PluginOptions("py", settings), retry=retry)


@pytest.fixture
async def plugin(server: ServerProcess) -> AsyncIterator[StepflowHttpPlugin]:
    plugin = make_plugin(url=server.url)
    await plugin.start()
    yield plugin
    await plugin.stop()


async def failure_in(
    plugin: StepflowHttpPlugin, component: str, input: JSON, context: StubContext
) -> ComponentError:
    with pytest.raises(ComponentError) as caught:
        await plugin.execute(component, input, context)
    return caught.value


async def failure(plugin: StepflowHttpPlugin, component: str, input: JSON) -> ComponentError:
    return await failure_in(plugin, component, input, StubContext())


async def busy_with_slow_call(plugin: StepflowHttpPlugin, seconds: float) -> asyncio.Task[JSON]:
    """Start a slow call and return once the server is running it."""
    busy = asyncio.create_task(plugin.execute("/slow", {"seconds": seconds}, StubContext()))
    while (await plugin.execute("/stats", {}, StubContext()))["active"] == 0:
        await asyncio.sleep(0.01)
    return busy


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# Discovery and plain calls --------------------------------------------------------------------


async def test_components_are_listed_once_then_cached(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    plugin = make_plugin(retry=NO_RETRY, url=server.url)
    listed = {info.component: info for info in await plugin.list_components()}
    assert {"/echo", "/fail", "/blobs", "/subflow"} <= listed.keys()
    assert listed["/echo"].description == "test component /echo"
    assert listed["/echo"].input_schema == {"type": "object"}
    assert plugin.has_component("/echo") is None
    server.stop()
    assert [c.component for c in await plugin.components()] == list(listed)
    with pytest.raises(ComponentError) as caught:
        await plugin.components(refresh=True)
    assert caught.value.code == ErrorCode.UNREACHABLE
    await plugin.stop()


async def test_info_describes_one_component(plugin: StepflowHttpPlugin) -> None:
    info = await plugin.info("/slow")
    assert (info.component, info.description) == ("/slow", "test component /slow")
    with pytest.raises(ComponentError) as caught:
        await plugin.info("/nope")
    assert caught.value.code == ErrorCode.COMPONENT_FAILED
    assert "not found" in caught.value.message


async def test_execute_returns_the_output(plugin: StepflowHttpPlugin) -> None:
    value = {"text": "Zoë ✓", "n": 12345678901234567890, "x": 0.5, "list": [None, True, {}]}
    assert await plugin.execute("/echo", value, StubContext()) == value


async def test_execute_sends_attempt_and_observability(plugin: StepflowHttpPlugin) -> None:
    context = StubContext(attempt=3, run_id="r-9", step_id="s-2")
    output = await plugin.execute("/context", None, context)
    assert output["attempt"] == 3
    assert output["observability"]["run_id"] == "r-9"
    assert output["observability"]["step_id"] == "s-2"


async def test_many_concurrent_calls_share_the_pool(plugin: StepflowHttpPlugin) -> None:
    outputs = await asyncio.gather(
        *(plugin.execute("/echo", {"i": i}, StubContext()) for i in range(200))
    )
    assert outputs == [{"i": i} for i in range(200)]


# Errors ---------------------------------------------------------------------------------------


async def test_a_component_that_raises_is_component_failed_with_its_message(
    plugin: StepflowHttpPlugin,
) -> None:
    error = await failure(plugin, "/fail", {"message": "the disk is full"})
    assert error.code == ErrorCode.COMPONENT_FAILED
    assert error.retryable is True
    assert "the disk is full" in error.message


async def test_invalid_params_are_invalid_input_and_not_retryable(
    plugin: StepflowHttpPlugin,
) -> None:
    error = await failure(plugin, "/strict", {"n": "one"})
    assert error.code == ErrorCode.INVALID_INPUT
    assert error.retryable is False
    assert error.data == {"input": {"n": "one"}}
    assert await plugin.execute("/strict", {"n": 1}, StubContext()) == {"n": 2}


async def test_an_unknown_component_is_component_failed(plugin: StepflowHttpPlugin) -> None:
    error = await failure(plugin, "/does_not_exist", {})
    assert error.code == ErrorCode.COMPONENT_FAILED
    assert "not found" in error.message


async def test_a_slow_call_is_a_retryable_timeout(server: ServerProcess) -> None:
    plugin = make_plugin(url=server.url, timeoutMs=300)
    started = time.monotonic()
    error = await failure(plugin, "/slow", {"seconds": 5})
    assert time.monotonic() - started < 2
    assert (error.code, error.retryable) == (ErrorCode.TIMEOUT, True)
    assert "300 ms" in error.message
    assert await plugin.execute("/echo", 1, StubContext()) == 1
    await plugin.stop()


async def test_no_server_is_unreachable_after_the_transport_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    plugin = make_plugin(url=url)
    started = time.monotonic()
    error = await failure(plugin, "/echo", {})
    assert (error.code, error.retryable) == (ErrorCode.UNREACHABLE, True)
    assert url in error.message and "tried 4 times" in error.message
    # Three backoffs of at least 10, 20 and 40 ms (half of 20, 40, 80: the jitter's floor).
    assert time.monotonic() - started >= 0.07
    await plugin.stop()


# Backpressure and crashes ---------------------------------------------------------------------


async def test_503_at_capacity_is_retried_until_the_server_has_room(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("--capacity", "1")
    retry = RetryConfig(transport_max_retries=20, backoff_min_delay_ms=20, backoff_max_delay_ms=50)
    plugin = make_plugin(retry=retry, url=server.url)
    busy = await busy_with_slow_call(plugin, 0.3)
    assert await plugin.execute("/echo", "let me in", StubContext()) == "let me in"
    assert busy.done()
    assert (await plugin.execute("/stats", {}, StubContext()))["rejected"] >= 1
    await plugin.stop()


async def test_503_when_retries_run_out_is_unreachable(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server("--capacity", "1")
    plugin = make_plugin(retry=RetryConfig(transport_max_retries=1, backoff_min_delay_ms=10,
                                           backoff_max_delay_ms=10), url=server.url)
    busy = await busy_with_slow_call(plugin, 0.5)
    error = await failure(plugin, "/echo", {})
    assert (error.code, error.retryable) == (ErrorCode.UNREACHABLE, True)
    assert "HTTP 503" in error.message
    await busy
    await plugin.stop()


async def test_a_server_killed_mid_request_is_unreachable_then_a_retry_succeeds(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    plugin = make_plugin(url=server.url)
    assert await plugin.execute("/echo", 1, StubContext()) == 1  # a pooled connection exists
    error = await failure(plugin, "/crash", {})
    assert (error.code, error.retryable) == (ErrorCode.UNREACHABLE, True)
    assert not server.alive()
    server.restart()
    assert await plugin.execute("/echo", 2, StubContext()) == 2
    await plugin.stop()


async def test_a_server_dying_mid_stream_is_a_transport_failure_and_resent(
    start_server: Callable[..., ServerProcess],
) -> None:
    """An answer cut off is treated as no answer: the call is sent again (execution is
    at-least-once; callbacks are idempotent: blobs are content-addressed, sub-run ids derive
    from the task id)."""
    server = start_server()
    plugin = make_plugin(url=server.url)
    context = StubContext()
    error = await failure_in(plugin, "/crash_mid_stream", {"n": 1}, context)
    assert (error.code, error.retryable) == (ErrorCode.UNREACHABLE, True)
    assert "tried 4 times" in error.message  # the first try, then the 3 transport retries
    assert context.blob_puts == 1  # the server died with the first try: nobody got the others
    assert list(context.blobs.values()) == [{"n": 1}]
    await plugin.stop()


async def test_a_call_cut_off_by_a_crash_succeeds_once_the_server_is_back(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server()
    retry = RetryConfig(transport_max_retries=50, backoff_min_delay_ms=50,
                        backoff_max_delay_ms=100)
    plugin = make_plugin(retry=retry, url=server.url)
    context = StubContext()
    call = asyncio.ensure_future(plugin.execute("/crash_mid_stream", {"n": 2}, context))
    deadline = time.monotonic() + 10
    while server.alive() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not server.alive()
    server.restart()
    # The restarted server gets the call again (its callback runs a second time) and crashes
    # again, as this component always does; then the retries meet a dead server.
    with pytest.raises(ComponentError) as caught:
        await asyncio.wait_for(call, 30)
    assert caught.value.code == ErrorCode.UNREACHABLE
    assert context.blob_puts == 2
    assert list(context.blobs.values()) == [{"n": 2}]
    await plugin.stop()


async def test_command_mode_restarts_a_server_that_died(tmp_path: Path) -> None:
    command, *args = server_command()
    plugin = make_plugin(retry=NO_RETRY, command=command, args=args)
    await plugin.start()
    first = (await plugin.execute("/instance", None, StubContext()))["pid"]
    marker = tmp_path / "crashed-once"
    error = await failure(plugin, "/crash", {"marker": str(marker)})
    assert (error.code, error.retryable) == (ErrorCode.UNREACHABLE, True)
    survived = await plugin.execute("/crash", {"marker": str(marker)}, StubContext())
    assert survived["survived"] is True
    assert survived["pid"] != first
    await plugin.stop()
    assert not pid_alive(survived["pid"])


async def test_command_mode_transport_retry_restarts_within_one_call(tmp_path: Path) -> None:
    command, *args = server_command()
    plugin = make_plugin(command=command, args=args, env={"UNUSED_BY_THE_SERVER": "1"})
    marker = tmp_path / "crashed-once"
    output = await plugin.execute("/crash", {"marker": str(marker)}, StubContext())
    assert output["survived"] is True and marker.exists()
    await plugin.stop()


async def test_command_mode_stop_terminates_the_server() -> None:
    plugin = make_plugin(command=sys.executable, args=[str(SERVER_SCRIPT)], stopGraceMs=2000)
    await plugin.start()
    pid = (await plugin.execute("/instance", None, StubContext()))["pid"]
    await plugin.stop()
    assert not pid_alive(pid)


async def test_command_mode_with_a_bad_command_is_unreachable() -> None:
    plugin = make_plugin(retry=NO_RETRY, command="/no/such/component-server")
    await plugin.start()  # not fatal: each call tries again
    error = await failure(plugin, "/echo", {})
    assert error.code == ErrorCode.UNREACHABLE
    assert "cannot start component server 'py'" in error.message
    await plugin.stop()


async def test_command_mode_with_a_server_that_never_prints_its_port(tmp_path: Path) -> None:
    plugin = make_plugin(retry=NO_RETRY, command=sys.executable,
                         args=["-c", "import time; time.sleep(30)"], startupTimeoutMs=300)
    started = time.monotonic()
    error = await failure(plugin, "/echo", {})
    assert error.code == ErrorCode.UNREACHABLE and "within 0.3 s" in error.message
    assert time.monotonic() - started < 5
    await plugin.stop()


# Callbacks (with a stub context; the runtime tests use real sub-runs) -------------------------


async def test_blob_callbacks_are_answered_from_the_context(plugin: StepflowHttpPlugin) -> None:
    context = StubContext()
    output = await plugin.execute("/blobs", {"k": [1, 2]}, context)
    assert output == {"blob_id": content_id({"k": [1, 2]}), "data": {"k": [1, 2]}}
    assert context.blobs[output["blob_id"]] == {"k": [1, 2]}


async def test_a_failing_callback_is_answered_with_an_error(plugin: StepflowHttpPlugin) -> None:
    output = await plugin.execute("/missing_blob", None, StubContext())
    assert "callback blobs/get failed" in output["error"] and "no blob" in output["error"]

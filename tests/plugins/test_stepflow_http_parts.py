"""The plugin's pieces without a server: settings, SSE framing, error codes, backoff."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from stepflow_stream.config import RetryConfig
from stepflow_stream.core.events import ErrorInfo, FlowResult
from stepflow_stream.errors import ComponentError, ConfigError, ErrorCode
from stepflow_stream.plugins import _jsonrpc
from stepflow_stream.plugins._sse import sse_data
from stepflow_stream.plugins.base import PluginOptions
from stepflow_stream.plugins.stepflow_http import StepflowHttpPlugin, parse_settings


async def lines(*items: str) -> AsyncIterator[str]:
    for item in items:
        yield item


async def frames(*items: str) -> list[str]:
    return [data async for data in sse_data(lines(*items))]


# Settings -------------------------------------------------------------------------------------


def test_settings_accept_camel_and_snake_case() -> None:
    camel = parse_settings("py", {"url": "http://h:1", "timeoutMs": 10, "connectTimeoutMs": 2})
    snake = parse_settings("py", {"url": "http://h:1", "timeout_ms": 10, "connect_timeout_ms": 2})
    assert camel == snake
    assert (camel.timeout_ms, camel.connect_timeout_ms) == (10, 2)


def test_command_settings() -> None:
    settings = parse_settings(
        "py", {"command": "uv", "args": ["run", "server.py", 8], "env": {"A": 1, "B": None}}
    )
    assert settings.args == ("run", "server.py", "8")
    assert settings.env == {"A": "1", "B": ""}


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({}, "either 'url'"),
        ({"url": "http://h", "command": "x"}, "either 'url'"),
        ({"url": "h:80"}, "http:// or https://"),
        ({"command": ""}, "program name"),
        ({"command": "x", "args": "a b"}, "list of strings"),
        ({"command": "x", "env": ["A=1"]}, "mapping"),
        ({"url": "http://h", "timeoutMs": 0}, "positive integer"),
        ({"url": "http://h", "timeoutMs": True}, "positive integer"),
        ({"url": "http://h", "timeoutMs": 1, "timeout_ms": 2}, "given twice"),
    ],
)
def test_bad_settings_are_config_errors(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        parse_settings("py", settings)
    assert caught.value.location.field is not None
    assert caught.value.location.field.startswith("plugins.py")


# Server-sent events ---------------------------------------------------------------------------


async def test_sse_yields_the_data_of_each_event() -> None:
    assert await frames("data: {\"a\":1}", "", ": a comment", "event: message", "id: 7",
                        "data:{\"b\":2}", "", "") == ['{"a":1}', '{"b":2}']


async def test_sse_joins_multi_line_data() -> None:
    assert await frames("data: [1,", "data: 2]", "") == ["[1,\n2]"]


async def test_sse_drops_an_event_cut_off_by_the_end_of_the_stream() -> None:
    assert await frames("data: 1", "", "data: {\"trunc") == ["1"]


# JSON-RPC error codes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "data", "expected", "retryable"),
    [
        (-32003, None, ErrorCode.COMPONENT_FAILED, True),
        (-32001, None, ErrorCode.COMPONENT_FAILED, True),
        (-32000, {"retryable": False}, ErrorCode.COMPONENT_FAILED, False),
        (-32602, None, ErrorCode.INVALID_INPUT, False),
        (-32002, None, ErrorCode.INVALID_INPUT, False),
        (-32601, None, ErrorCode.COMPONENT_FAILED, False),
    ],
)
def test_rpc_errors_map_to_component_errors(
    code: int, data: Any, expected: str, retryable: bool
) -> None:
    error = _jsonrpc.component_error(_jsonrpc.RpcError(code, "it went wrong", data))
    assert (error.code, error.retryable, error.message) == (expected, retryable, "it went wrong")


def test_callback_errors_map_back_to_rpc_codes() -> None:
    invalid = ComponentError(ErrorCode.INVALID_INPUT, "no blob", retryable=False)
    assert _jsonrpc.error_for(invalid) == (-32602, "no blob", None)
    assert _jsonrpc.error_for(ValueError("bad"))[:2] == (-32603, "ValueError: bad")


def test_a_wire_flow_result_has_an_integer_code_and_keeps_ours_in_data() -> None:
    failed = FlowResult(error=ErrorInfo(ErrorCode.TIMEOUT, "slow", {"step": "s"}))
    assert _jsonrpc.wire_flow_result(failed) == {
        "outcome": "failed",
        "error": {"code": -32011, "message": "slow", "data": {"code": "TIMEOUT", "step": "s"}},
    }
    assert _jsonrpc.wire_flow_result(FlowResult(result=[1])) == {
        "outcome": "success", "result": [1]
    }
    codes = list(_jsonrpc.FLOW_ERROR_CODES.values())
    assert len(codes) == len(set(codes))


def test_messages_decode_with_a_null_result_apart_from_a_missing_one() -> None:
    assert _jsonrpc.decode_message(b'{"jsonrpc":"2.0","id":1,"result":null}').result is None
    missing = _jsonrpc.decode_message(b'{"jsonrpc":"2.0","id":1}')
    assert missing.result is msgspec.UNSET


# Backoff --------------------------------------------------------------------------------------


def test_backoff_doubles_with_jitter_up_to_the_maximum() -> None:
    plugin = StepflowHttpPlugin(
        PluginOptions("py", {"url": "http://h:1"}),
        retry=RetryConfig(backoff_min_delay_ms=100, backoff_max_delay_ms=1000),
    )
    for failures, full in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (60, 1.0)]:
        delays = [plugin._backoff(failures) for _ in range(50)]
        assert all(full / 2 <= delay <= full for delay in delays)
        assert len(set(delays)) > 1
    constant = StepflowHttpPlugin(
        PluginOptions("py", {"url": "http://h:1"}),
        retry=RetryConfig(backoff_min_delay_ms=100, backoff_type="constant"),
    )
    assert all(0.05 <= constant._backoff(9) <= 0.1 for _ in range(20))

"""The SDK's public API and registration rules, in process."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from sdk_support import REPO

import stepflow_stream.sdk as sdk
from stepflow_stream.cli.main import main
from stepflow_stream.sdk import ComponentServer, Context, SyncContext


def test_public_api() -> None:
    assert sdk.__all__ == [
        "CallbackError",
        "ComponentError",
        "ComponentServer",
        "Context",
        "RpcErrorCode",
        "StepInfo",
        "SyncContext",
    ]


class Text(msgspec.Struct):
    text: str


def test_names_default_to_the_function_and_descriptions_to_the_docstring() -> None:
    server = ComponentServer("t")

    @server.component
    async def words(input: Text) -> int:
        """Count words."""
        return len(input.text.split())

    @server.component(name="/tools/{tool}", description="A tool.")
    def tool(input: Any, context: SyncContext, tool: str) -> Any:
        return tool

    assert server.components == ["/words", "/tools/{tool}"]
    assert words.__name__ == "words"  # the decorator returns the function itself


@pytest.mark.parametrize(
    ("define", "problem"),
    [
        ("def f(input: Text, context: Context) -> None: ...", "takes SyncContext"),
        ("async def f(input: Text, context: SyncContext) -> None: ...", "takes Context"),
        ("async def f(input: Text, extra: int) -> None: ...", "parameter 'extra'"),
        ("async def f(*inputs: Text) -> None: ...", "not supported"),
        ("async def f(input: object) -> None: ...", "component '/f'"),
    ],
)
def test_signatures_that_do_not_fit_fail_at_registration(define: str, problem: str) -> None:
    namespace: dict[str, Any] = {"Text": Text, "Context": Context, "SyncContext": SyncContext}
    exec(define, namespace)
    with pytest.raises(TypeError, match=problem):
        ComponentServer().component()(namespace["f"])


def test_a_name_registered_twice_is_refused() -> None:
    server = ComponentServer()

    async def f(input: Text) -> None: ...

    server.component()(f)
    with pytest.raises(ValueError, match="twice"):
        server.component(name="/f")(f)


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("no_colon", "is not MODULE:ATTRIBUTE"),
        ("no_such_module_anywhere:server", "cannot import module"),
        ("tests.sdk.sample_components:nothing", "has no attribute"),
        ("tests.sdk.sample_components:Pair", "not a stepflow_stream.sdk.ComponentServer"),
    ],
)
def test_serve_components_rejects_bad_targets_in_one_line(
    target: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve-components", target, "--app-dir", str(REPO)]) == 2
    err = capsys.readouterr().err
    assert problem in err and err.count("\n") == 1

"""The mock plugin: components whose results are written in the config, keyed by exact input.

Settings::

    components:
      /one_output:
        input_schema: {...}            # optional; checked before looking up a behavior
        output_schema: {...}           # optional; reported by list_components
        behaviors:
          {input: "a"}: {outcome: success, result: {output: b}}
          {input: "flaky"}:            # a list is served by attempt; the last one repeats
            - {outcome: failed, error: {code: COMPONENT_FAILED, message: boom}}
            - {outcome: success, result: {output: ok}}

Behavior keys are compared by canonical JSON, so the key order of a mapping does not matter.
A failed behavior raises a retryable ComponentError, so ``onError: retry`` can be tested.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import jsonschema

from stepflow_stream.core.events import ErrorInfo, FlowResult
from stepflow_stream.core.jsonvalue import (
    JSON,
    JSONKey,
    JSONObject,
    canonical_json,
    compact_json,
    plain,
)
from stepflow_stream.core.schema import CompiledSchema, describe
from stepflow_stream.errors import ComponentError, ConfigError, ErrorCode
from stepflow_stream.plugins.base import ComponentInfo, ExecutionContext, Plugin, PluginOptions

__all__ = ["MockPlugin"]

_MAX_INPUT_IN_MESSAGE = 300


@dataclass(frozen=True, slots=True)
class _MockComponent:
    name: str
    description: str | None
    input_schema: CompiledSchema | None
    output_schema: CompiledSchema | None
    behaviors: dict[str, tuple[FlowResult, ...]]
    """Results by the canonical JSON of the input; one per attempt, the last repeating."""


class MockPlugin(Plugin):
    """Serves the results written in its settings; see the module docstring for the format."""

    def __init__(self, options: PluginOptions) -> None:
        self.name = options.name
        self._components = _parse_components(options.name, options.settings)

    def has_component(self, component: str) -> bool:
        return component in self._components

    async def list_components(self) -> list[ComponentInfo]:
        return [
            ComponentInfo(
                component=mock.name,
                description=mock.description,
                input_schema=copy.deepcopy(mock.input_schema.schema) if mock.input_schema else None,
                output_schema=copy.deepcopy(mock.output_schema.schema)
                if mock.output_schema
                else None,
            )
            for mock in self._components.values()
        ]

    async def execute(self, component: str, input: JSON, context: ExecutionContext) -> JSON:
        mock = self._components.get(component)
        if mock is None:
            offered = ", ".join(sorted(self._components)) or "none"
            raise ComponentError(
                ErrorCode.VALIDATION_FAILED,
                f"mock plugin '{self.name}' has no component '{component}' (it offers {offered})",
                retryable=False,
            )
        if mock.input_schema is not None:
            violations = mock.input_schema.violations(input)
            if violations:
                raise ComponentError(
                    ErrorCode.INVALID_INPUT,
                    f"input to mock component '{component}' does not match its input schema: "
                    f"{describe(violations)}",
                    retryable=False,
                )
        results = mock.behaviors.get(canonical_json(input))
        if results is None:
            raise ComponentError(
                ErrorCode.INVALID_INPUT,
                f"mock component '{component}' has no behavior for input {_shorten(input)}",
                retryable=False,
            )
        result = results[min(max(context.attempt, 1), len(results)) - 1]
        if result.error is not None:
            raise ComponentError(
                result.error.code, result.error.message, retryable=True, data=result.error.data
            )
        # A fresh copy: the engine owns the output it is given.
        return copy.deepcopy(result.result)


def _shorten(value: JSON) -> str:
    text = compact_json(value)
    if len(text) <= _MAX_INPUT_IN_MESSAGE:
        return text
    return text[:_MAX_INPUT_IN_MESSAGE] + "..."


# Parsing the settings ---------------------------------------------------------------------------


def _parse_components(plugin: str, settings: JSONObject) -> dict[str, _MockComponent]:
    components = settings.get("components", {})
    if not isinstance(components, dict):
        raise ConfigError(
            f"mock plugin '{plugin}': 'components' must be a mapping from component names "
            f"to their behaviors, got {_kind(components)}"
        )
    parsed: dict[str, _MockComponent] = {}
    for name, spec in components.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"mock plugin '{plugin}': component names are strings, got {name!r}")
        # Routes hand the plugin "/" + the captured rest, so "one_output" means "/one_output".
        full_name = name if name.startswith("/") else f"/{name}"
        where = f"mock plugin '{plugin}': component '{full_name}'"
        if full_name in parsed:
            raise ConfigError(f"{where}: listed twice (with and without the leading '/')")
        parsed[full_name] = _parse_component(where, full_name, spec)
    return parsed


def _parse_component(where: str, name: str, spec: Any) -> _MockComponent:
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a mapping with 'behaviors', got {_kind(spec)}")
    description = spec.get("description")
    if description is not None and not isinstance(description, str):
        raise ConfigError(f"{where}: 'description' must be a string")
    input_schema = _schema(where, "input_schema", spec.get("input_schema", spec.get("inputSchema")))
    output_schema = _schema(
        where, "output_schema", spec.get("output_schema", spec.get("outputSchema"))
    )
    behaviors = spec.get("behaviors", {})
    if not isinstance(behaviors, dict):
        raise ConfigError(
            f"{where}: 'behaviors' must be a mapping from inputs to FlowResults, "
            f"got {_kind(behaviors)}"
        )
    parsed: dict[str, tuple[FlowResult, ...]] = {}
    for key, value in behaviors.items():
        input = _behavior_input(where, key)
        here = f"{where}: behavior for input {compact_json(input)}"
        parsed[canonical_json(input)] = _parse_results(here, value)
    return _MockComponent(
        name=name,
        description=description,
        input_schema=input_schema,
        output_schema=output_schema,
        behaviors=parsed,
    )


def _schema(where: str, field: str, value: Any) -> CompiledSchema | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: '{field}' must be a JSON Schema object, got {_kind(value)}")
    try:
        return CompiledSchema(plain(value))
    except jsonschema.SchemaError as exc:
        raise ConfigError(f"{where}: '{field}' is not a valid JSON Schema: {exc.message}") from None


def _behavior_input(where: str, key: Any) -> JSON:
    if isinstance(key, JSONKey):
        return key.value
    if key is None or isinstance(key, str | int | float | bool):
        return key
    raise ConfigError(f"{where}: behavior key {key!r} is not a JSON value")


def _parse_results(where: str, value: Any) -> tuple[FlowResult, ...]:
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{where}: a list of FlowResults must not be empty")
        return tuple(_parse_result(f"{where}, attempt {i + 1}", v) for i, v in enumerate(value))
    return (_parse_result(where, value),)


def _parse_result(where: str, value: Any) -> FlowResult:
    """A FlowResult written in the config, checked strictly (FlowResult.from_json is lenient)."""
    expected = "{outcome: success, result: ...} or {outcome: failed, error: {code, message}}"
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected {expected}, got {_kind(value)}")
    outcome = value.get("outcome")
    if outcome == "success":
        if "result" not in value:
            raise ConfigError(f"{where}: a successful FlowResult needs 'result'")
        return FlowResult(result=plain(value["result"]))
    if outcome == "failed":
        error = value.get("error")
        if not (
            isinstance(error, dict)
            and isinstance(error.get("code"), str)
            and isinstance(error.get("message"), str)
        ):
            raise ConfigError(
                f"{where}: a failed FlowResult needs 'error: {{code, message}}' "
                "with string code and message"
            )
        return FlowResult(
            error=ErrorInfo(error["code"], error["message"], plain(error.get("data")))
        )
    raise ConfigError(f"{where}: 'outcome' must be 'success' or 'failed', got {outcome!r}")


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)

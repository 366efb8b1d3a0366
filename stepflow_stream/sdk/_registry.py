"""Registered components: what a function's signature says about its input, output, context
and path parameters, and lookup of a requested name among exact names and name patterns.

A component function takes, in any order:

- its input: the first other parameter; its annotation (a msgspec Struct, a dataclass, or
  anything else msgspec converts) gives the input schema, and the input is decoded into it;
- optionally a context: a parameter annotated :class:`Context` (``async def``) or
  :class:`SyncContext` (``def``), or named ``context`` without annotation;
- optionally, keyword parameters named after the placeholders of its name
  (``/core/{*component}`` passes ``component="openai/chat"``).

The return annotation gives the output schema; the value returned is converted to JSON by
msgspec. Names start with ``/`` (added when missing), as in stepflow-py.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from stepflow_stream.config.routes import RoutePattern, RoutePatternError, compile_pattern
from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.sdk._context import Context, SyncContext

ComponentFunction = Callable[..., Any]

# msgspec's messages end with "- at `$.path`" and name missing fields as "field `name`".
_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_MISSING = re.compile(r"missing required field `(?P<name>[^`]+)`")


class InvalidInput(Exception):
    """An input that does not decode into the component's input type."""

    def __init__(self, reason: str, field: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


@dataclass(frozen=True, slots=True)
class ComponentSpec:
    """One registered component."""

    name: str
    """``/name`` or a pattern like ``/core/{*component}``."""
    function: ComponentFunction
    description: str | None
    input_type: Any
    input_param: str | None
    """The parameter receiving the input; None when the function takes none."""
    context_param: str | None
    path_kwargs: tuple[str, ...]
    """Placeholders passed to the function as keyword arguments."""
    is_async: bool
    input_schema: JSONObject
    output_schema: JSONObject
    pattern: RoutePattern | None

    def decode_input(self, value: JSON) -> Any:
        """``value`` as the input type; raises :class:`InvalidInput` naming the field."""
        try:
            return msgspec.convert(value, self.input_type)
        except msgspec.ValidationError as exc:
            raise InvalidInput(str(exc), _field_of(str(exc))) from None

    def arguments(self, input: Any, context: Context | SyncContext) -> dict[str, Any]:
        """Keyword arguments for one call."""
        path_params = context.path_params
        kwargs: dict[str, Any] = {name: path_params[name] for name in self.path_kwargs}
        if self.input_param is not None:
            kwargs[self.input_param] = input
        if self.context_param is not None:
            kwargs[self.context_param] = context
        return kwargs


def normalize_name(name: str) -> str:
    """Component names start with ``/``; callers may leave it out."""
    return name if name.startswith("/") else f"/{name}"


def inspect_component(
    function: ComponentFunction, name: str | None, description: str | None
) -> ComponentSpec:
    """The spec of ``function``; raises TypeError when its signature does not fit."""
    full_name = normalize_name(name or function.__name__)
    pattern = _compile_name(full_name)
    captures = set(pattern.captures) if pattern is not None else set()
    is_async = inspect.iscoroutinefunction(function)
    hints = typing.get_type_hints(function, include_extras=True)
    context_type = Context if is_async else SyncContext

    input_param: str | None = None
    context_param: str | None = None
    path_kwargs: list[str] = []
    for parameter in inspect.signature(function).parameters.values():
        where = f"component '{full_name}': parameter '{parameter.name}'"
        if parameter.kind in (
            parameter.VAR_POSITIONAL,
            parameter.VAR_KEYWORD,
            parameter.POSITIONAL_ONLY,
        ):
            # Arguments are passed by keyword.
            raise TypeError(f"{where}: *args, **kwargs and positional-only are not supported")
        annotation = hints.get(parameter.name)
        if annotation in (Context, SyncContext) or (
            annotation is None and parameter.name == "context"
        ):
            if annotation not in (None, context_type):
                kind = "async def" if is_async else "def"
                raise TypeError(f"{where}: a '{kind}' component takes {context_type.__name__}")
            context_param = parameter.name
        elif parameter.name in captures:
            path_kwargs.append(parameter.name)
        elif input_param is None and parameter.kind != parameter.KEYWORD_ONLY:
            input_param = parameter.name
        elif parameter.default is parameter.empty:
            raise TypeError(f"{where} is not the input, a context or a path parameter")

    input_type = hints.get(input_param, Any) if input_param is not None else Any
    output_type = hints.get("return", Any)
    try:
        input_schema = msgspec.json.schema(input_type)
        output_schema = msgspec.json.schema(output_type)
    except TypeError as exc:
        raise TypeError(f"component '{full_name}': {exc}") from None
    doc = inspect.getdoc(function)
    return ComponentSpec(
        name=full_name,
        function=function,
        description=description if description is not None else doc,
        input_type=input_type,
        input_param=input_param,
        context_param=context_param,
        path_kwargs=tuple(path_kwargs),
        is_async=is_async,
        input_schema=input_schema,
        output_schema=output_schema,
        pattern=pattern,
    )


class ComponentRegistry:
    """Components by name. Lookup tries exact names first, then patterns in the order they
    were registered."""

    def __init__(self) -> None:
        self._exact: dict[str, ComponentSpec] = {}
        self._patterns: list[ComponentSpec] = []

    def add(self, spec: ComponentSpec) -> None:
        """Register ``spec``; raises ValueError when its name is taken."""
        if any(spec.name == known.name for known in self):
            raise ValueError(f"component '{spec.name}' is registered twice")
        if spec.pattern is None:
            self._exact[spec.name] = spec
        else:
            self._patterns.append(spec)

    def lookup(self, component: str) -> tuple[ComponentSpec, dict[str, str]] | None:
        """The component serving ``component`` and what its placeholders captured."""
        name = normalize_name(component)
        exact = self._exact.get(name)
        if exact is not None:
            return exact, {}
        for spec in self._patterns:
            assert spec.pattern is not None
            captured = spec.pattern.match(name)
            if captured is not None:
                return spec, captured
        return None

    def __iter__(self) -> typing.Iterator[ComponentSpec]:
        yield from self._exact.values()
        yield from self._patterns

    def __len__(self) -> int:
        return len(self._exact) + len(self._patterns)


def _compile_name(name: str) -> RoutePattern | None:
    """The pattern of a name with placeholders; None for a plain name."""
    if "{" not in name and "}" not in name:
        if not all(name[1:].split("/")):
            raise TypeError(f"component name '{name}' has an empty segment")
        return None
    try:
        return compile_pattern(name)
    except RoutePatternError as exc:
        raise TypeError(f"component name '{name}': {exc}") from None


def _field_of(reason: str) -> str | None:
    """The dotted field a msgspec validation message is about (``items[0].name``)."""
    at = _AT.search(reason)
    path = at.group("path").lstrip(".") if at is not None else ""
    missing = _MISSING.search(reason)
    if missing is not None:
        path = f"{path}.{missing.group('name')}" if path else missing.group("name")
    return path or None

"""What a builtin component is: an async handler next to its description and schemas."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.plugins.base import ExecutionContext


@dataclass(frozen=True, slots=True)
class Settings:
    """What components read besides their input: the working directory and OpenAI access."""

    base_dir: Path
    openai_api_key: str | None
    openai_base_url: str
    openai_model: str


Handler: TypeAlias = Callable[[JSON, ExecutionContext, Settings], Awaitable[JSON]]


@dataclass(frozen=True, slots=True)
class Component:
    """A builtin component, as :class:`BuiltinPlugin` lists and runs it."""

    name: str
    handler: Handler
    description: str
    input_schema: JSONObject
    output_schema: JSONObject


def component(
    name: str, description: str, input_schema: JSONObject, output_schema: JSONObject
) -> Callable[[Handler], Component]:
    """Declare the decorated handler as the builtin component ``name``."""

    def define(handler: Handler) -> Component:
        return Component(name, handler, description, input_schema, output_schema)

    return define


# Schema building blocks shared by the components' declarations.
STRING: JSONObject = {"type": "string"}
ANY: JSONObject = {}


def object_schema(properties: JSONObject, required: list[str]) -> JSONObject:
    """The JSON Schema of an object with these properties, of which ``required`` must be set."""
    return {"type": "object", "properties": properties, "required": required}

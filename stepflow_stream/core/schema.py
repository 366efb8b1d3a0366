"""JSON Schema validation (Draft 2020-12, as Stepflow) with messages that name the field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jsonschema
from jsonschema.validators import validator_for

from stepflow_stream.core.jsonvalue import JSON, JSONObject


@dataclass(frozen=True, slots=True)
class SchemaViolation:
    """One reason a value fails its schema: ``field`` is a JSONPath such as ``$.user.age``."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class CompiledSchema:
    """A schema checked once and ready to validate many values."""

    __slots__ = ("_validator", "schema")

    def __init__(self, schema: JSONObject, defs: JSONObject | None = None) -> None:
        if defs and "$defs" not in schema:
            schema = {**schema, "$defs": defs}
        cls: Any = validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
        self.schema = schema
        self._validator = cls(schema)

    def violations(self, value: JSON) -> list[SchemaViolation]:
        """Every violation, deepest first; empty when ``value`` is valid."""
        errors = sorted(self._validator.iter_errors(value), key=lambda e: -len(e.absolute_path))
        return [SchemaViolation(_field(list(e.absolute_path)), e.message) for e in errors]


def _field(path: list[str | int]) -> str:
    text = "$"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def describe(violations: list[SchemaViolation]) -> str:
    """One line for the first violation, and how many more there are."""
    first = str(violations[0])
    return first if len(violations) == 1 else f"{first} (and {len(violations) - 1} more)"

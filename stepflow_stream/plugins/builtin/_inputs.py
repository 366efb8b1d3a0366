"""Reading a component's input by hand, field by field.

Hand-written checks are faster than jsonschema on the hot path, and their messages name the
component, the field and what was expected. A bad input is a non-retryable ``INVALID_INPUT``.
"""

from __future__ import annotations

from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.errors import ComponentError, ErrorCode


def json_type(value: JSON) -> str:
    """The JSON Schema type name of ``value``, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def invalid(component: str, message: str) -> ComponentError:
    """The error for a bad input to ``component``."""
    return ComponentError(ErrorCode.INVALID_INPUT, f"{component}: {message}", retryable=False)


class Input:
    """A component's input object, read field by field; errors name the component and field.

    An optional field that is null counts as absent (expressions such as ``$coalesce`` often
    produce null)."""

    __slots__ = ("component", "fields")

    def __init__(self, component: str, value: JSON) -> None:
        if not isinstance(value, dict):
            raise invalid(component, f"input must be an object, got {json_type(value)}")
        self.component = component
        self.fields: JSONObject = value

    def wrong(self, field: str, expected: str) -> ComponentError:
        got = json_type(self.fields.get(field))
        return invalid(self.component, f"field '{field}' must be {expected}, got {got}")

    def value(self, field: str, meaning: str) -> JSON:
        if field not in self.fields:
            raise invalid(self.component, f"missing field '{field}' ({meaning})")
        return self.fields[field]

    def string(self, field: str, meaning: str) -> str:
        value = self.value(field, meaning)
        if not isinstance(value, str):
            raise self.wrong(field, "a string")
        return value

    def optional_string(self, field: str) -> str | None:
        value = self.fields.get(field)
        if value is not None and not isinstance(value, str):
            raise self.wrong(field, "a string")
        return value

    def array(self, field: str, meaning: str) -> list[JSON]:
        value = self.value(field, meaning)
        if not isinstance(value, list):
            raise self.wrong(field, "an array")
        return value

    def optional_positive_int(self, field: str) -> int | None:
        value = self.fields.get(field)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.wrong(field, "a positive integer")
        return value

    def number(self, field: str, meaning: str) -> float:
        value = self.value(field, meaning)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.wrong(field, "a number")
        return float(value)

    def optional_number(self, field: str) -> float | None:
        return None if self.fields.get(field) is None else self.number(field, "")

    def flow(self, field: str, meaning: str) -> JSONObject | str:
        """An inline flow (object) or the blob id (string) of one."""
        value = self.value(field, meaning)
        if not isinstance(value, dict | str):
            raise self.wrong(field, "a flow (object) or the blob id of one (string)")
        return value

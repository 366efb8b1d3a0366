"""Parsing YAML or JSON text into JSON values that remember their line numbers.

Pure: it parses text that the caller has read. Mappings come back as :class:`LocatedDict`,
which records the line of the mapping and of each key, so later errors can say
``flow.yaml:12``. Mapping keys that are themselves mappings or lists (mock ``behaviors``
are keyed by whole inputs) load as :class:`JSONKey`, a hashable wrapper of the value.
"""

from __future__ import annotations

from typing import Any

import yaml

from stepflow_stream.core.jsonvalue import JSON, compact_json, plain
from stepflow_stream.errors import Location, UserInputError


class LocatedDict(dict[str, Any]):
    """A dict that knows the 1-based line of itself and of each of its keys."""

    __slots__ = ("key_lines", "line")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.line: int | None = None
        self.key_lines: dict[Any, int] = {}


def line_of(value: Any, key: Any = None) -> int | None:
    """The line of ``value`` (or of ``value[key]``), when it was parsed from text."""
    if isinstance(value, LocatedDict):
        if key is not None and key in value.key_lines:
            return value.key_lines[key]
        return value.line
    return None


class JSONKey:
    """A mapping key that is a JSON object or array; equal keys have equal canonical JSON."""

    __slots__ = ("_canonical", "value")

    def __init__(self, value: JSON) -> None:
        self.value = value
        self._canonical = canonical_json(value)

    def __hash__(self) -> int:
        return hash(self._canonical)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JSONKey) and other._canonical == self._canonical

    def __repr__(self) -> str:
        return f"JSONKey({self.value!r})"


def canonical_json(value: JSON) -> str:
    """JSON with sorted keys, for comparing values whatever their key order."""
    return compact_json(_sorted(value))


def _sorted(value: JSON) -> JSON:
    if isinstance(value, dict):
        return {str(k): _sorted(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


class _LocatingLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LocatingLoader, node: yaml.MappingNode) -> LocatedDict:
    loader.flatten_mapping(node)
    result = LocatedDict()
    result.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, dict | list):
            key = JSONKey(plain(key))
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


_LocatingLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def parse_document(
    text: str, filename: str = "<string>", error: type[UserInputError] = UserInputError
) -> JSON:
    """Parse YAML (a superset of JSON) into JSON values with line numbers.

    Raises ``error`` naming the file, the line and what the parser expected.
    """
    try:
        return yaml.load(text, Loader=_LocatingLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or "invalid YAML"
        context = f" ({exc.context})" if exc.context else ""
        raise error(f"malformed YAML: {problem}{context}", Location(filename, line)) from None
    except yaml.YAMLError as exc:
        raise error(f"malformed YAML: {exc}", Location(filename)) from None


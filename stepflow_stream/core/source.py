"""Parsing YAML or JSON text into JSON values that remember their line numbers.

Pure: it parses text that the caller has read. Mappings come back as :class:`LocatedDict`,
which records the line of the mapping and of each key, so later errors can say
``flow.yaml:12``. Mapping keys that are themselves mappings or lists (mock ``behaviors``
are keyed by whole inputs) load as :class:`JSONKey`, a hashable wrapper of the value.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from stepflow_stream.core.jsonvalue import JSON, JSONKey, canonical_json, plain
from stepflow_stream.errors import Location, UserInputError

__all__ = ["JSONKey", "LocatedDict", "canonical_json", "line_of", "parse_document"]


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


class _LocatingLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false, as Stepflow's parser reads them
    (YAML 1.1 also turns yes, no, on and off into booleans)."""


_LocatingLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_LocatingLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


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


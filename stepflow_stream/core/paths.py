"""Paths into JSON values: a plain field name, or a JSONPath such as ``$.a.b[0]``.

Supported JSONPath: ``$``, ``.name``, ``['name']`` / ``["name"]``, ``[N]`` (negative counts from
the end) and ``[*]`` / ``.*`` (every element). A path that matches nothing gives ``None``, so
``$coalesce`` can supply a fallback for optional fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stepflow_stream.core.jsonvalue import JSON

_WILDCARD = object()
Segment = str | int | object

_TOKEN = re.compile(
    r"""\.(?P<name>[A-Za-z_$][\w$-]*)
      |\.\*(?P<dotstar>)
      |\[\s*(?P<index>-?\d+)\s*\]
      |\[\s*\*\s*\](?P<star>)
      |\[\s*'(?P<sq>(?:[^'\\]|\\.)*)'\s*\]
      |\[\s*"(?P<dq>(?:[^"\\]|\\.)*)"\s*\]
    """,
    re.VERBOSE,
)


class PathSyntaxError(ValueError):
    """A JSONPath that cannot be parsed; the message says at which character."""


@dataclass(frozen=True, slots=True)
class Path:
    """A parsed path. ``text`` is what the flow wrote, for messages."""

    text: str
    segments: tuple[Segment, ...]

    def select(self, value: JSON) -> JSON:
        """The part of ``value`` this path names, or None when it names nothing."""
        return _select(value, self.segments, 0)


def _select(value: JSON, segments: tuple[Segment, ...], start: int) -> JSON:
    for i in range(start, len(segments)):
        segment = segments[i]
        if segment is _WILDCARD:
            items = list(value.values()) if isinstance(value, dict) else value
            if not isinstance(items, list):
                return None
            return [_select(item, segments, i + 1) for item in items]
        if isinstance(segment, str):
            if not isinstance(value, dict):
                return None
            value = value.get(segment)
        elif isinstance(value, list):
            assert isinstance(segment, int)
            if -len(value) <= segment < len(value):
                value = value[segment]
            else:
                return None
        else:
            return None
    return value


def parse_path(text: str) -> Path:
    """Parse a field name or a JSONPath. Raises PathSyntaxError naming the bad character."""
    if not text.startswith("$"):
        return Path(text, (text,) if text else ())
    segments: list[Segment] = []
    pos = 1
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise PathSyntaxError(
                f"invalid JSONPath {text!r} at character {pos + 1}: expected .name, [N], "
                "['name'] or [*]"
            )
        groups = match.groupdict()
        if groups["name"] is not None:
            segments.append(groups["name"])
        elif groups["index"] is not None:
            segments.append(int(groups["index"]))
        elif groups["sq"] is not None:
            segments.append(_unescape(groups["sq"]))
        elif groups["dq"] is not None:
            segments.append(_unescape(groups["dq"]))
        else:
            segments.append(_WILDCARD)
        pos = match.end()
    return Path(text, tuple(segments))


def _unescape(quoted: str) -> str:
    return re.sub(r"\\(.)", lambda m: m.group(1), quoted)


"""Type aliases for JSON values and their canonical encodings."""

from __future__ import annotations

import hashlib
import json
from typing import Any, TypeAlias

JSON: TypeAlias = Any
"""Any JSON value: None, bool, int, float, str, list of JSON or dict of str to JSON."""

JSONObject: TypeAlias = dict[str, Any]


def compact_json(value: JSON) -> str:
    """The compact JSON text Stepflow hashes: no spaces, keys in document order, UTF-8."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def content_id(value: JSON) -> str:
    """The content address of a value: sha256 hex of its compact JSON, as Stepflow's blobs."""
    return hashlib.sha256(compact_json(value).encode("utf-8")).hexdigest()


def is_truthy(value: JSON) -> bool:
    """JSON truthiness: null, false, 0, "", [] and {} are falsy."""
    return bool(value)


def plain(value: Any) -> JSON:
    """A copy of a parsed document with plain dicts and str keys (drops line information).

    A key that is a mapping or list (:class:`JSONKey`) becomes its compact JSON text."""
    if isinstance(value, dict):
        return {_key_text(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def _key_text(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, JSONKey):
        return compact_json(key.value)
    return compact_json(key) if key is None or isinstance(key, bool) else str(key)


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

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
    """A copy of a parsed document with plain dicts and str keys (drops line information)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value

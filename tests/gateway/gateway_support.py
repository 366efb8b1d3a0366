"""Tokens and config sections the gateway tests share."""

from __future__ import annotations

import hashlib
from typing import Any

TOKENS = {"admin": "admin-secret-token", "a": "tenant-a-token", "b": "tenant-b-token"}
PLUGINS: dict[str, Any] = {
    "plugins": {"builtin": {"type": "builtin"}},
    "routes": {"/builtin/{*component}": [{"plugin": "builtin"}]},
}


def gateway_section(max_body_bytes: int = 64 * 1024) -> dict[str, Any]:
    """Three tokens: ``admin`` (no tenant: every run), and tenants ``a`` and ``b``."""
    return {
        "maxBodyBytes": max_body_bytes,
        "waitTimeoutSeconds": 20,
        "tokens": [
            {"name": name, "sha256": hashlib.sha256(token.encode()).hexdigest(),
             **({} if name == "admin" else {"tenant": name})}
            for name, token in TOKENS.items()
        ],
    }


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}

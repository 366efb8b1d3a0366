"""The gateway's settings, read from the ``gateway`` section of a config::

    gateway:
      maxBodyBytes: 1048576     # a larger request body is refused with 413
      waitTimeoutSeconds: 30    # the longest a `wait: true` request waits for results
      tokens:                   # none: the API is open
        - {name: ci, sha256: 9f86d0...}            # hex of sha256(token)
        - {name: team-a, sha256: 60303a..., tenant: a}

The config loader keeps unknown top-level keys only as warnings, so this section is read from
the config document itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stepflow_stream.config.loader import expand_env
from stepflow_stream.core.jsonvalue import plain
from stepflow_stream.core.source import line_of, parse_document
from stepflow_stream.errors import ConfigError, Location

__all__ = ["GatewaySettings", "Token", "gateway_settings", "parse_gateway_settings"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_KNOWN = ("maxBodyBytes", "waitTimeoutSeconds", "tokens")


@dataclass(frozen=True, slots=True)
class Token:
    """One bearer token the gateway accepts, known only by the hash of its value."""

    name: str
    """Who holds it, for logs."""
    sha256: str
    """The lowercase hex SHA-256 of the token."""
    tenant: str | None = None
    """The tenant whose runs the holder submits and sees; None: every run."""


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """How the gateway serves its API."""

    tokens: tuple[Token, ...] = ()
    """The accepted bearer tokens; none means no token is required."""
    max_body_bytes: int = 1024 * 1024
    """Request bodies larger than this are refused with 413."""
    wait_timeout_s: float = 30.0
    """The longest a ``wait: true`` submission waits before answering without the result."""


def gateway_settings(path: Path, env: Mapping[str, str]) -> GatewaySettings:
    """The settings of the config file at ``path`` (``${VAR}`` expanded from ``env``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file: {exc}", Location(str(path))) from None
    document = parse_document(expand_env(text, env, str(path)), str(path), ConfigError)
    section = document.get("gateway") if isinstance(document, dict) else None
    return parse_gateway_settings(section, str(path), line_of(document, "gateway"))


def parse_gateway_settings(
    section: Any, source: str = "<config>", line: int | None = None
) -> GatewaySettings:
    """Settings from a parsed ``gateway`` section (None: the defaults); raises
    :class:`ConfigError` naming the field."""
    if section is None:
        return GatewaySettings()

    def error(field: str, message: str) -> ConfigError:
        return ConfigError(message, Location(source, line_of(section, field.split(".")[0])
                                             or line, field=f"gateway.{field}"))

    if not isinstance(section, dict):
        raise ConfigError("'gateway' is a mapping such as {tokens: [...], maxBodyBytes: N}",
                          Location(source, line, field="gateway"))
    unknown = sorted(str(key) for key in section if key not in _KNOWN)
    if unknown:
        raise error(unknown[0], f"unknown gateway setting '{unknown[0]}'; known: "
                    f"{', '.join(_KNOWN)}")
    defaults = GatewaySettings()
    max_body = section.get("maxBodyBytes", defaults.max_body_bytes)
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body < 1:
        raise error("maxBodyBytes", f"'maxBodyBytes' is a positive integer, got {max_body!r}")
    wait = section.get("waitTimeoutSeconds", defaults.wait_timeout_s)
    if isinstance(wait, bool) or not isinstance(wait, int | float) or wait <= 0:
        raise error("waitTimeoutSeconds",
                    f"'waitTimeoutSeconds' is a positive number, got {wait!r}")
    entries = section.get("tokens", [])
    if not isinstance(entries, list):
        raise error("tokens", "'tokens' is a list of {name, sha256, tenant?}")
    tokens = tuple(_token(plain(entry), index, error) for index, entry in enumerate(entries))
    return GatewaySettings(tokens, max_body, float(wait))


def _token(entry: Any, index: int, error: Callable[[str, str], ConfigError]) -> Token:
    where = f"tokens[{index}]"
    if not isinstance(entry, dict) or set(entry) - {"name", "sha256", "tenant"}:
        raise error(where, f"'{where}' is {{name, sha256, tenant?}}, got {entry!r}")
    name, digest, tenant = entry.get("name"), entry.get("sha256"), entry.get("tenant")
    if not isinstance(name, str) or not name:
        raise error(f"{where}.name", f"'{where}.name' is a non-empty string")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest.lower()):
        raise error(f"{where}.sha256", f"'{where}.sha256' is the 64 hex digits of the "
                    "token's SHA-256 (e.g. `printf %s TOKEN | sha256sum`)")
    if tenant is not None and (not isinstance(tenant, str) or not tenant):
        raise error(f"{where}.tenant", f"'{where}.tenant' is a non-empty string")
    return Token(name, digest.lower(), tenant)

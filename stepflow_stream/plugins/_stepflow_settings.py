"""The settings of a ``stepflow`` plugin, parsed and checked (see ``stepflow_http``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from stepflow_stream.core.jsonvalue import JSONObject, plain
from stepflow_stream.errors import ConfigError, Location

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StepflowHttpSettings:
    """The settings of one ``stepflow`` plugin; exactly one of ``url`` and ``command``."""

    url: str | None = None
    """The component server (or its load balancer) to POST to."""
    command: str | None = None
    """A program that runs a component server and prints ``{"port": N}`` on stdout."""
    args: tuple[str, ...] = ()
    """Arguments of ``command``."""
    env: dict[str, str] = field(default_factory=dict)
    """Variables added to the environment of ``command``."""
    timeout_ms: int = 60_000
    """Longest one call may take, from sending it to its response (callbacks included)."""
    connect_timeout_ms: int = 5_000
    """Longest opening a connection may take."""
    startup_timeout_ms: int = 30_000
    """Command mode: time for the server to print its port and answer ``/health``."""
    stop_grace_ms: int = 5_000
    """Command mode: time between SIGTERM and SIGKILL when stopping the server."""


_SETTING_KEYS = {
    **{name: name for name in ("url", "command", "args", "env")},
    **{
        alias: canonical
        for canonical, camel in (
            ("timeout_ms", "timeoutMs"),
            ("connect_timeout_ms", "connectTimeoutMs"),
            ("startup_timeout_ms", "startupTimeoutMs"),
            ("stop_grace_ms", "stopGraceMs"),
        )
        for alias in (canonical, camel)
    },
}


def parse_settings(name: str, settings: JSONObject) -> StepflowHttpSettings:
    """Check a ``stepflow`` plugin's settings; raises :class:`ConfigError` naming the field."""
    values: dict[str, Any] = {}
    for key, value in plain(settings).items():
        canonical = _SETTING_KEYS.get(key)
        where = Location(field=f"plugins.{name}.{key}")
        if canonical is None:
            logger.warning("plugin '%s': unknown setting '%s' ignored", name, key)
        elif canonical in values:
            raise ConfigError(f"'{key}' is given twice (camelCase and snake_case)", where)
        else:
            values[canonical] = _checked(canonical, key, value, where)
    if ("url" in values) == ("command" in values):
        raise ConfigError(
            "a stepflow plugin needs either 'url' (a running server) or 'command' (one to "
            "start), not both or neither",
            Location(field=f"plugins.{name}"),
        )
    return StepflowHttpSettings(**values)


def _checked(canonical: str, key: str, value: Any, where: Location) -> Any:
    if canonical == "url":
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            raise ConfigError(f"'{key}' is an http:// or https:// URL, got {value!r}", where)
        return value
    if canonical == "command":
        if not isinstance(value, str) or not value:
            raise ConfigError(f"'{key}' is a program name or path, got {value!r}", where)
        return value
    if canonical == "args":
        if not isinstance(value, list) or not all(isinstance(a, str | int | float) for a in value):
            raise ConfigError(f"'{key}' is a list of strings, got {value!r}", where)
        return tuple(str(a) for a in value)
    if canonical == "env":
        if not isinstance(value, dict) or any(isinstance(v, dict | list) for v in value.values()):
            raise ConfigError(f"'{key}' is a mapping of names to strings, got {value!r}", where)
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"'{key}' is a positive integer, got {value!r}", where)
    return value

"""The config model: what a ``stepflow-config.yml`` says, parsed and checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from stepflow_stream.config.routes import RouteTable

PluginType = Literal["builtin", "mock", "stepflow", "kafka"]
StateStoreType = Literal["sqlite", "inMemory", "postgres"]
RuntimeType = Literal["embedded", "kafka"]
BackoffType = Literal["exponential", "constant"]

PLUGIN_TYPES: tuple[str, ...] = get_args(PluginType)
STATE_STORE_TYPES: tuple[str, ...] = get_args(StateStoreType)
RUNTIME_TYPES: tuple[str, ...] = get_args(RuntimeType)
BACKOFF_TYPES: tuple[str, ...] = get_args(BackoffType)


@dataclass(frozen=True, slots=True)
class PluginConfig:
    """One entry of ``plugins``."""

    name: str
    """The plugin's name, as route rules refer to it."""
    type: PluginType
    """Which plugin implementation runs it."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The plugin's whole mapping minus ``type``, as parsed: nested mapping keys may be
    :class:`~stepflow_stream.core.source.JSONKey` (mock ``behaviors`` are keyed by inputs)."""


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """How transport failures (not component errors) are retried."""

    transport_max_retries: int = 3
    """Retries after the first failed attempt to reach a plugin."""
    backoff_min_delay_ms: int = 100
    """Delay before the first retry."""
    backoff_max_delay_ms: int = 10000
    """Upper bound of any delay between retries."""
    backoff_type: BackoffType = "exponential"
    """``exponential`` doubles the delay each retry; ``constant`` keeps the minimum delay."""


@dataclass(frozen=True, slots=True)
class StateStoreConfig:
    """Where journals and snapshots are kept (``stateStore``, alias ``storageConfig``)."""

    type: StateStoreType = "sqlite"
    """``sqlite``, ``inMemory`` or ``postgres``."""
    database_url: str | None = None
    """The database to use; None means the runtime's default (required for postgres)."""


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    """Which runtime runs flows."""

    type: RuntimeType = "embedded"
    """``embedded`` (one process) or ``kafka`` (distributed)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The runtime's whole mapping minus ``type`` (bootstrap servers, topic prefix ...)."""


@dataclass(frozen=True, slots=True)
class Config:
    """A whole config: plugins, the routes to them, and the runtime settings."""

    plugins: dict[str, PluginConfig]
    """The plugins by name."""
    routes: RouteTable
    """Which plugin, under which name, runs each component path."""
    state_store: StateStoreConfig = StateStoreConfig()
    """Where journals and snapshots are kept."""
    retry: RetryConfig = RetryConfig()
    """How transport failures are retried."""
    runtime: RuntimeConfig = RuntimeConfig()
    """Which runtime runs flows."""
    source: str = "<default>"
    """The file the config came from, for messages."""
    max_concurrency: int | None = None
    """At most this many component calls at once; None means the runtime's default."""
    warnings: tuple[str, ...] = ()
    """Things the loader ignored (unknown keys), each naming the file and line."""

"""Building the plugins a config names."""

from __future__ import annotations

from pathlib import Path

from stepflow_stream.config import Config
from stepflow_stream.errors import ConfigError, Location
from stepflow_stream.plugins.base import Plugin, PluginOptions
from stepflow_stream.plugins.builtin import BuiltinPlugin
from stepflow_stream.plugins.mock import MockPlugin
from stepflow_stream.plugins.stepflow_http import StepflowHttpPlugin


def create_plugins(config: Config, base_dir: Path) -> dict[str, Plugin]:
    """One plugin instance per ``plugins`` entry of the config."""
    plugins: dict[str, Plugin] = {}
    for name, plugin_config in config.plugins.items():
        options = PluginOptions(name, plugin_config.settings)
        if plugin_config.type == "builtin":
            plugins[name] = BuiltinPlugin(options, base_dir=base_dir)
        elif plugin_config.type == "mock":
            plugins[name] = MockPlugin(options)
        elif plugin_config.type == "stepflow":
            try:
                plugins[name] = StepflowHttpPlugin(options, retry=config.retry)
            except ConfigError as exc:
                where = Location(config.source, field=exc.location.field)
                raise ConfigError(exc.reason, where) from None
        else:
            raise ConfigError(
                f"plugin '{name}' has type '{plugin_config.type}', which this runtime cannot "
                "run yet (available: builtin, mock, stepflow)",
                Location(config.source, field=f"plugins.{name}.type"),
            )
    return plugins

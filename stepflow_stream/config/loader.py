"""Loading ``stepflow-config.yml``: finding the file, expanding ``${VAR}``, parsing, checking.

Only :func:`find_config_file` and :func:`load_config` touch the filesystem; the rest takes text
or parsed documents and an explicit environment, so it is tested without files.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from stepflow_stream.config.model import (
    BACKOFF_TYPES,
    PLUGIN_TYPES,
    RUNTIME_TYPES,
    STATE_STORE_TYPES,
    BackoffType,
    Config,
    PluginConfig,
    PluginType,
    RetryConfig,
    RuntimeConfig,
    RuntimeType,
    StateStoreConfig,
    StateStoreType,
)
from stepflow_stream.config.routes import RouteTable, parse_routes
from stepflow_stream.core.jsonvalue import JSON, plain
from stepflow_stream.core.source import LocatedDict, line_of, parse_document
from stepflow_stream.errors import ConfigError, Location

CONFIG_FILE_NAMES = ("stepflow-config.yml", "stepflow-config.yaml")

_ENV_REF = re.compile(
    r"(?P<escaped>\$\$\{)"
    r"|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}\n]*))?\}"
    r"|(?P<malformed>\$\{[^}\n]*\}?)"
)

_TOP_LEVEL_KEYS = {
    "plugins": "plugins",
    "routes": "routes",
    "stateStore": "stateStore",
    "state_store": "stateStore",
    "storageConfig": "stateStore",
    "storage_config": "stateStore",
    "retry": "retry",
    "runtime": "runtime",
    "maxConcurrency": "maxConcurrency",
    "max_concurrency": "maxConcurrency",
}
_STATE_STORE_KEYS = {"type": "type", "databaseUrl": "databaseUrl", "database_url": "databaseUrl"}
_RETRY_KEYS = {
    "transportMaxRetries": "transportMaxRetries",
    "transport_max_retries": "transportMaxRetries",
    "backoff": "backoff",
}
_BACKOFF_KEYS = {
    "type": "type",
    "minDelayMs": "minDelayMs",
    "min_delay_ms": "minDelayMs",
    "maxDelayMs": "maxDelayMs",
    "max_delay_ms": "maxDelayMs",
}


def expand_env(text: str, env: Mapping[str, str], source: str = "<config>") -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in config text with values from ``env``.

    The default applies when VAR is unset or empty; ``$${`` stands for a literal ``${``. Lines
    that are only a comment are left as they are, so a commented-out setting cannot fail the
    load. Raises :class:`ConfigError` naming the variable, ``source`` and the line for a
    ``${VAR}`` that ``env`` lacks, or for a malformed ``${...}``.
    """
    if "${" not in text:
        return text
    lines = text.split("\n")
    return "\n".join(
        line if line.lstrip().startswith("#") else _expand_line(line, number, env, source)
        for number, line in enumerate(lines, 1)
    )


def _expand_document(value: JSON, env: Mapping[str, str], source: str, line: int | None) -> JSON:
    """``value`` with ``${VAR}`` expanded in every string (not in mapping keys)."""
    if isinstance(value, str):
        return _expand_line(value, line, env, source) if "${" in value else value
    if isinstance(value, list):
        return [_expand_document(item, env, source, line) for item in value]
    if isinstance(value, dict):
        expanded = LocatedDict()
        expanded.line = line_of(value)
        for key, item in value.items():
            key_line = line_of(value, key)
            if key_line is not None:
                expanded.key_lines[key] = key_line
            expanded[key] = _expand_document(item, env, source, key_line or line)
        return expanded
    return value


def _expand_line(line: str, number: int | None, env: Mapping[str, str], source: str) -> str:
    def replace(found: re.Match[str]) -> str:
        if found.group("escaped"):
            return "${"
        name = found.group("name")
        if name is None:
            raise ConfigError(
                f"malformed variable reference '{found.group('malformed')}': write ${{VAR}} or "
                "${VAR:-default} ($${ for a literal ${)",
                Location(source, number),
            )
        value = env.get(name)
        default = found.group("default")
        if default is not None and not value:
            return default
        if value is None:
            raise ConfigError(
                f"environment variable '{name}' is not set (write ${{{name}:-default}} to give "
                "a default)",
                Location(source, number),
            )
        return value

    return _ENV_REF.sub(replace, line)


def parse_config(text: str, source: str, env: Mapping[str, str]) -> Config:
    """Parse config text: expand ``${VAR}`` from ``env``, parse the YAML, check everything.

    Raises :class:`ConfigError` naming ``source``, the line and the plugin or route at fault.
    """
    document = parse_document(expand_env(text, env, source), source, ConfigError)
    return parse_config_document(document, source)


def parse_config_document(
    document: JSON, source: str = "<config>", env: Mapping[str, str] | None = None
) -> Config:
    """Build a :class:`Config` from a parsed document (such as a flow's ``test.config``).

    With ``env``, ``${VAR}`` is expanded in every string value. A document with neither
    ``plugins`` nor ``routes`` gets the default ones (see :func:`default_config`); unknown keys
    become ``Config.warnings``.
    """
    if env is not None:
        document = _expand_document(document, env, source, line_of(document))
    return _ConfigParser(source).parse(document)


def default_config() -> Config:
    """The config used when there is no file: one ``builtin`` plugin at ``/builtin``."""
    plugins, routes = _builtin_only("<default>")
    return Config(plugins, routes)


def _builtin_only(source: str) -> tuple[dict[str, PluginConfig], RouteTable]:
    plugins = {"builtin": PluginConfig("builtin", "builtin")}
    routes = parse_routes(
        {"/builtin/{*component}": [{"plugin": "builtin"}]}, plugins=plugins, source=source
    )
    return plugins, routes


def find_config_file(flow_path: Path | None, cwd: Path) -> Path | None:
    """The config a flow uses when none is given, or None.

    Looks for ``stepflow-config.yml`` (then ``.yaml``) in the flow's directory (or in
    ``flow_path`` itself if it is a directory) and each directory above it up to the root,
    then in ``cwd``. A relative ``flow_path`` is taken relative to ``cwd``.
    """
    directories: list[Path] = []
    if flow_path is not None:
        flow = Path(os.path.normpath(cwd.absolute() / flow_path))
        start = flow if flow.is_dir() else flow.parent
        directories += [start, *start.parents]
    directories.append(cwd)
    for directory in directories:
        for name in CONFIG_FILE_NAMES:
            candidate = directory / name
            if candidate.is_file():
                return candidate
    return None


def load_config(path: Path, env: Mapping[str, str]) -> Config:
    """Read and parse the config file at ``path``; raises :class:`ConfigError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file: {exc}", Location(str(path))) from None
    return parse_config(text, str(path), env)


class _ConfigParser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.warnings: list[str] = []

    def error(self, message: str, where: Any = None, key: Any = None) -> ConfigError:
        return ConfigError(message, Location(self.source, line_of(where, key)))

    def parse(self, document: JSON) -> Config:
        if document is None:  # an empty file
            document = {}
        if not isinstance(document, dict):
            raise self.error(f"a config is a mapping, got {type(document).__name__}", document)
        keys = self._keys(document, _TOP_LEVEL_KEYS, "config")
        plugins, routes = self._plugins_and_routes(document, keys)
        return Config(
            plugins=plugins,
            routes=routes,
            state_store=self._state_store(document, keys.get("stateStore")),
            retry=self._retry(document, keys.get("retry")),
            runtime=self._runtime(document, keys.get("runtime")),
            source=self.source,
            max_concurrency=self._max_concurrency(document, keys.get("maxConcurrency")),
            warnings=(*self.warnings, *routes.warnings),
        )

    def _keys(
        self, mapping: dict[Any, Any], aliases: Mapping[str, str], what: str
    ) -> dict[str, Any]:
        """The key ``mapping`` uses for each canonical name; unknown keys become warnings."""
        found: dict[str, Any] = {}
        for key in mapping:
            canonical = aliases.get(key) if isinstance(key, str) else None
            if canonical is None:
                at = Location(self.source, line_of(mapping, key))
                self.warnings.append(f"{at}: unknown {what} key '{key}' ignored")
            elif canonical in found:
                raise self.error(
                    f"'{found[canonical]}' and '{key}' are the same setting; give only one",
                    mapping, key,
                )
            else:
                found[canonical] = key
        return found

    def _section(self, parent: dict[Any, Any], key: Any, shape: str) -> dict[Any, Any]:
        section = parent[key]
        if not isinstance(section, dict):
            raise self.error(f"'{key}' is a mapping such as {shape}", parent, key)
        return section

    def _plugins_and_routes(
        self, document: dict[Any, Any], keys: dict[str, Any]
    ) -> tuple[dict[str, PluginConfig], RouteTable]:
        if "plugins" not in keys and "routes" not in keys:
            return _builtin_only(self.source)
        plugins: dict[str, PluginConfig] = {}
        if "plugins" in keys:
            section = self._section(document, keys["plugins"], "{name: {type: builtin}}")
            plugins = {name: self._plugin(section, name) for name in section}
        if "routes" not in keys:
            raise self.error(
                "'plugins' without 'routes': no component can reach them", document,
                keys["plugins"],
            )
        section = self._section(document, keys["routes"], '{"/builtin": [{plugin: builtin}]}')
        return plugins, parse_routes(section, plugins=plugins, source=self.source)

    def _plugin(self, plugins: dict[Any, Any], name: Any) -> PluginConfig:
        valid = ", ".join(PLUGIN_TYPES)
        if not isinstance(name, str) or not name:
            raise self.error(f"plugin name {name!r} is not a string", plugins, name)
        spec = plugins[name]
        if not isinstance(spec, dict):
            raise self.error(
                f"plugin '{name}' is a mapping with a 'type' (one of {valid})", plugins, name
            )
        plugin_type = spec.get("type")
        if plugin_type is None:
            raise self.error(f"plugin '{name}' has no 'type'; valid types: {valid}", spec)
        if plugin_type not in PLUGIN_TYPES:
            raise self.error(
                f"plugin '{name}' has unknown type {plugin_type!r}; valid types: {valid}",
                spec, "type",
            )
        settings = {key: value for key, value in spec.items() if key != "type"}
        return PluginConfig(name, cast(PluginType, plugin_type), settings)

    def _state_store(self, document: dict[Any, Any], key: Any) -> StateStoreConfig:
        if key is None:
            return StateStoreConfig()
        section = self._section(document, key, "{type: sqlite, databaseUrl: ...}")
        keys = self._keys(section, _STATE_STORE_KEYS, str(key))
        store_type = section.get(keys.get("type"))
        if store_type not in STATE_STORE_TYPES:
            valid = ", ".join(STATE_STORE_TYPES)
            problem = "has no 'type'" if store_type is None else f"type is {store_type!r}"
            raise self.error(f"'{key}' {problem}; valid types: {valid}", section, keys.get("type"))
        url = section.get(keys.get("databaseUrl"))
        if url is not None and not isinstance(url, str):
            raise self.error(f"'{key}' databaseUrl is a string", section, keys.get("databaseUrl"))
        if store_type == "postgres" and not url:
            raise self.error(f"'{key}' of type postgres needs a databaseUrl", section)
        return StateStoreConfig(cast(StateStoreType, store_type), url)

    def _retry(self, document: dict[Any, Any], key: Any) -> RetryConfig:
        if key is None:
            return RetryConfig()
        section = self._section(document, key, "{transportMaxRetries: 3, backoff: {...}}")
        keys = self._keys(section, _RETRY_KEYS, "retry")
        defaults = RetryConfig()
        retries = self._count(section, keys, "transportMaxRetries", defaults.transport_max_retries)
        if "backoff" not in keys:
            return RetryConfig(transport_max_retries=retries)
        backoff = self._section(section, keys["backoff"], "{type: exponential, minDelayMs: 100}")
        backoff_keys = self._keys(backoff, _BACKOFF_KEYS, "retry.backoff")
        backoff_type = backoff.get(backoff_keys.get("type"), defaults.backoff_type)
        if backoff_type not in BACKOFF_TYPES:
            raise self.error(
                f"retry backoff type is {backoff_type!r}; valid types: {', '.join(BACKOFF_TYPES)}",
                backoff, backoff_keys.get("type"),
            )
        low = self._count(backoff, backoff_keys, "minDelayMs", defaults.backoff_min_delay_ms)
        high = self._count(backoff, backoff_keys, "maxDelayMs", defaults.backoff_max_delay_ms)
        if low > high:
            raise self.error(
                f"retry backoff minDelayMs ({low}) is greater than maxDelayMs ({high})", backoff
            )
        return RetryConfig(retries, low, high, cast(BackoffType, backoff_type))

    def _count(self, section: dict[Any, Any], keys: dict[str, Any], name: str, default: int) -> int:
        if name not in keys:
            return default
        value = section[keys[name]]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.error(
                f"'{name}' is a non-negative integer, got {value!r}", section, keys[name]
            )
        return value

    def _runtime(self, document: dict[Any, Any], key: Any) -> RuntimeConfig:
        if key is None:
            return RuntimeConfig()
        section = self._section(document, key, "{type: embedded}")
        runtime_type = section.get("type")
        if runtime_type not in RUNTIME_TYPES:
            problem = "has no 'type'" if runtime_type is None else f"type is {runtime_type!r}"
            raise self.error(
                f"'runtime' {problem}; valid types: {', '.join(RUNTIME_TYPES)}", section, "type"
            )
        settings = plain({name: value for name, value in section.items() if name != "type"})
        return RuntimeConfig(cast(RuntimeType, runtime_type), settings)

    def _max_concurrency(self, document: dict[Any, Any], key: Any) -> int | None:
        if key is None:
            return None
        value = document[key]
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.error(f"'{key}' is a positive integer, got {value!r}", document, key)
        return value

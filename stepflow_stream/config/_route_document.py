"""Reading the ``routes`` mapping of a config into a :class:`RouteTable`, checking it as it goes.

Errors name the file, the line and the route; unknown rule keys become warnings.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from stepflow_stream.config._route_table import (
    PLACEHOLDER,
    Route,
    RouteCondition,
    RoutePattern,
    RoutePatternError,
    RouteRule,
    RouteTable,
    compile_pattern,
)
from stepflow_stream.core.jsonvalue import JSON, plain
from stepflow_stream.core.paths import PathSyntaxError, parse_path
from stepflow_stream.core.source import line_of
from stepflow_stream.errors import ConfigError, Location

_RULE_KEYS = {
    "plugin": "plugin",
    "conditions": "conditions",
    "componentAllow": "componentAllow",
    "component_allow": "componentAllow",
    "componentDeny": "componentDeny",
    "component_deny": "componentDeny",
    "component": "component",
}


def parse_routes(
    document: JSON, *, plugins: Collection[str] | None = None, source: str = "<config>"
) -> RouteTable:
    """Build a :class:`RouteTable` from the ``routes`` mapping of a parsed config.

    ``plugins`` are the configured plugin names (None skips that check). Raises
    :class:`ConfigError` naming the file, line and route; unknown rule keys become warnings.
    """
    return _RoutesParser(source, plugins).parse(document)


class _RoutesParser:
    def __init__(self, source: str, plugins: Collection[str] | None) -> None:
        self.source = source
        self.plugins = plugins
        self.warnings: list[str] = []

    def error(self, message: str, where: Any = None, key: Any = None) -> ConfigError:
        return ConfigError(message, self._at(where, key))

    def parse(self, document: JSON) -> RouteTable:
        if not isinstance(document, dict):
            raise self.error("'routes' is a mapping of path patterns to lists of rules")
        routes = [self._route(key, document) for key in document]
        return RouteTable(routes, self.source, self.warnings)

    def _route(self, key: Any, document: dict[Any, Any]) -> Route:
        if not isinstance(key, str) or not key.startswith("/"):
            raise self.error(
                f"route key {key!r} is not a path pattern starting with '/'", document, key
            )
        try:
            pattern = compile_pattern(key)
        except RoutePatternError as exc:
            message = f"route '{key}' is not a valid pattern: {exc}"
            raise self.error(message, document, key) from None
        rules = document[key]
        if not isinstance(rules, list) or not rules:
            raise self.error(
                f"route '{key}' holds a non-empty list of rules such as [{{plugin: name}}]",
                document, key,
            )
        return Route(
            pattern,
            tuple(self._rule(f"route '{key}', rule {i}", pattern, rule, document, key)
                  for i, rule in enumerate(rules, 1)),
        )

    def _rule(
        self, where: str, pattern: RoutePattern, doc: JSON, routes: Any, key: str
    ) -> RouteRule:
        if not isinstance(doc, dict):
            raise self.error(f"{where} is a mapping such as {{plugin: name}}", routes, key)
        fields: dict[str, Any] = {}
        for name, value in doc.items():
            canonical = _RULE_KEYS.get(str(name))
            if canonical is None:
                at = self._at(doc, name)
                self.warnings.append(f"{at}: {where}: unknown key '{name}' ignored")
            else:
                fields[canonical] = value
        plugin = fields.get("plugin")
        if not isinstance(plugin, str) or not plugin:
            raise self.error(f"{where} has no 'plugin' (the name of a plugin)", doc, "plugin")
        if self.plugins is not None and plugin not in self.plugins:
            known = ", ".join(sorted(self.plugins)) or "none are configured"
            raise self.error(
                f"{where} names unknown plugin '{plugin}'; plugins: {known}", doc, "plugin"
            )
        allow = fields.get("componentAllow")
        deny = fields.get("componentDeny", [])
        return RouteRule(
            plugin=plugin,
            conditions=self._conditions(where, fields.get("conditions"), doc),
            component_allow=None if allow is None
            else self._names(where, "componentAllow", allow, doc),
            component_deny=self._names(where, "componentDeny", deny, doc),
            component=self._rename(where, pattern, fields.get("component"), doc),
        )

    def _at(self, where: Any, key: Any = None) -> Location:
        """The file and line of ``where`` (or of its ``key``), for errors and warnings."""
        return Location(self.source, line_of(where, key))

    def _conditions(self, where: str, doc: JSON, rule: Any) -> tuple[RouteCondition, ...]:
        if doc is None:
            return ()
        if not isinstance(doc, list):
            raise self.error(f"{where}: 'conditions' is a list of {{path, value}}", rule,
                             "conditions")
        conditions: list[RouteCondition] = []
        for i, item in enumerate(doc, 1):
            if not (isinstance(item, dict) and isinstance(item.get("path"), str)
                    and "value" in item):
                raise self.error(
                    f"{where}: condition {i} is not {{path, value}} (a JSONPath and a value)",
                    item if isinstance(item, dict) else rule,
                    None if isinstance(item, dict) else "conditions",
                )
            for name in item:
                if name not in ("path", "value"):
                    self.warnings.append(
                        f"{self._at(item, name)}: {where}: condition {i}: unknown key '{name}' "
                        "ignored"
                    )
            try:
                path = parse_path(item["path"])
            except PathSyntaxError as exc:
                raise self.error(f"{where}: condition {i}: {exc}", item, "path") from None
            conditions.append(RouteCondition(path, plain(item["value"])))
        return tuple(conditions)

    def _names(self, where: str, field: str, doc: JSON, rule: Any) -> frozenset[str]:
        if not isinstance(doc, list) or not all(isinstance(n, str) and n for n in doc):
            raise self.error(f"{where}: '{field}' is a list of component names", rule, field)
        return frozenset(name if name.startswith("/") else "/" + name for name in doc)

    def _rename(self, where: str, pattern: RoutePattern, doc: JSON, rule: Any) -> str | None:
        if doc is None:
            return None
        if not isinstance(doc, str) or not doc:
            raise self.error(f"{where}: 'component' is a component name", rule, "component")
        rest = PLACEHOLDER.sub("", doc)
        if "{" in rest or "}" in rest:
            raise self.error(
                f"{where}: 'component' {doc!r} has a brace that is not a '{{name}}' placeholder",
                rule, "component",
            )
        for found in PLACEHOLDER.finditer(doc):
            if found.group(2) not in pattern.captures:
                captures = ", ".join(f"{{{name}}}" for name in pattern.captures)
                raise self.error(
                    f"{where}: 'component' uses '{found.group(0)}', which route "
                    f"'{pattern.text}' does not capture (it captures {captures})",
                    rule, "component",
                )
        return doc

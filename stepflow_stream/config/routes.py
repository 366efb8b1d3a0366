"""Routes: which plugin runs a component, and under which name.

A route key is a path pattern of literal segments, ``{name}`` (exactly one segment) and a last
``{*name}`` (the rest: one or more segments). A key without placeholders is a prefix: ``/mock``
means ``/mock/{*component}``. Each key holds an ordered list of rules. Routing tries the keys
whose pattern matches, in config order, and within each key its rules in order; the first rule
whose conditions match the step input and whose ``componentAllow``/``componentDeny`` lists admit
the component wins. The plugin sees ``/`` plus what ``{*component}`` (else the last placeholder)
captured, unless the rule's ``component`` renames it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from stepflow_stream.core.jsonvalue import JSON, plain
from stepflow_stream.core.paths import Path, PathSyntaxError, parse_path
from stepflow_stream.core.source import line_of
from stepflow_stream.errors import ComponentError, ConfigError, ErrorCode, Location

_PLACEHOLDER = re.compile(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)\}")
_ONE_SEGMENT = "[^/]+"
_REST = "[^/]+(?:/[^/]+)*"
# A flow names few component paths; the bound only stops unbounded growth from odd callers.
_CACHE_LIMIT = 4096

_RULE_KEYS = {
    "plugin": "plugin",
    "conditions": "conditions",
    "componentAllow": "componentAllow",
    "component_allow": "componentAllow",
    "componentDeny": "componentDeny",
    "component_deny": "componentDeny",
    "component": "component",
}


class RoutePatternError(ValueError):
    """A route key that is not a valid pattern; the message says why."""


@dataclass(frozen=True, slots=True)
class RoutePattern:
    """A compiled route key."""

    text: str
    """The key as written in the config."""
    regex: re.Pattern[str]
    """Matches a whole component path; one named group per placeholder."""
    captures: tuple[str, ...]
    """The placeholder names, in order."""
    component_capture: str
    """The placeholder whose value, after a ``/``, is the component name the plugin sees."""

    def match(self, component: str) -> dict[str, str] | None:
        """The captured segments by placeholder name, or None when the path does not match."""
        found = self.regex.fullmatch(component)
        return found.groupdict() if found is not None else None


def compile_pattern(text: str) -> RoutePattern:
    """Compile a route key; raises :class:`RoutePatternError`."""
    if not text.startswith("/"):
        raise RoutePatternError("a route pattern starts with '/'")
    segments = text[1:].split("/") if text != "/" else []
    parts: list[str] = []
    captures: list[str] = []
    for index, segment in enumerate(segments):
        placeholder = _PLACEHOLDER.fullmatch(segment)
        if placeholder is None:
            if not segment:
                raise RoutePatternError("empty segment (two '/' in a row, or a trailing '/')")
            if "{" in segment or "}" in segment:
                raise RoutePatternError(
                    f"segment '{segment}' is neither plain text nor a whole '{{name}}' or "
                    "'{*name}'"
                )
            parts.append(re.escape(segment))
            continue
        star, name = placeholder.groups()
        if name in captures:
            raise RoutePatternError(f"placeholder '{name}' appears twice")
        if star and index != len(segments) - 1:
            raise RoutePatternError(f"'{{*{name}}}' must be the last segment")
        captures.append(name)
        parts.append(f"(?P<{name}>{_REST if star else _ONE_SEGMENT})")
    if not captures:
        captures.append("component")
        parts.append(f"(?P<component>{_REST})")
    regex = re.compile("".join("/" + part for part in parts))
    component_capture = "component" if "component" in captures else captures[-1]
    return RoutePattern(text, regex, tuple(captures), component_capture)


@dataclass(frozen=True, slots=True)
class RouteCondition:
    """A rule condition: the part of the step input at ``path`` equals ``value``."""

    path: Path
    """Where to look in the step input."""
    value: JSON
    """What must be there (JSON equality: ``true`` is not ``1``)."""

    def matches(self, input: JSON) -> bool:
        """Whether ``input`` satisfies this condition."""
        return _same_json(self.path.select(input), self.value)


def _same_json(a: JSON, b: JSON) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(_same_json(a[key], b[key]) for key in a)
        )
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same_json, a, b))
    return bool(a == b)


@dataclass(frozen=True, slots=True)
class RouteRule:
    """One rule of a route key."""

    plugin: str
    """The plugin that runs the component when this rule wins."""
    conditions: tuple[RouteCondition, ...] = ()
    """All must match the step input; none means the rule always matches."""
    component_allow: frozenset[str] | None = None
    """When set, only these component names (as the plugin sees them, with a leading ``/``)."""
    component_deny: frozenset[str] = frozenset()
    """Component names (with a leading ``/``) this rule never takes."""
    component: str | None = None
    """A new component name for the plugin; ``{name}`` is replaced by that capture."""

    def admits(self, name: str) -> bool:
        """Whether the allow and deny lists let the component ``name`` through."""
        allow = self.component_allow
        return (allow is None or name in allow) and name not in self.component_deny

    def target(self, name: str, captures: dict[str, str]) -> str:
        """The component name the plugin sees: ``name``, or the rule's rename."""
        if self.component is None:
            return name
        renamed = _PLACEHOLDER.sub(lambda found: captures[found.group(2)], self.component)
        return renamed if renamed.startswith("/") else "/" + renamed


@dataclass(frozen=True, slots=True)
class Route:
    """A route key and its rules."""

    pattern: RoutePattern
    """The compiled key."""
    rules: tuple[RouteRule, ...]
    """Tried in order."""


Candidate = tuple[tuple[RouteCondition, ...], tuple[str, str]]


@dataclass(frozen=True, slots=True)
class _Plan:
    """What routing one component path can give, independent of the input."""

    candidates: tuple[Candidate, ...]
    """Conditions and (plugin, name), in order; ends at the first rule without conditions."""
    matched: tuple[str, ...]
    """The route keys whose pattern matched the path, for messages."""


class RouteTable:
    """The config's routes; implements the scheduler's ``Router``."""

    __slots__ = ("_plans", "routes", "source", "warnings")

    def __init__(
        self, routes: Sequence[Route], source: str = "<config>", warnings: Sequence[str] = ()
    ) -> None:
        self.routes = tuple(routes)
        self.source = source
        self.warnings = tuple(warnings)
        self._plans: dict[str, _Plan] = {}

    def __repr__(self) -> str:
        return f"RouteTable({list(self.patterns)!r})"

    @property
    def patterns(self) -> tuple[str, ...]:
        """The route keys as written, in config order."""
        return tuple(route.pattern.text for route in self.routes)

    def route(self, component: str, input: JSON) -> tuple[str, str]:
        """``(plugin name, component name within the plugin)`` for a step.

        Raises :class:`ComponentError` (``INVALID_INPUT``, not retryable) when nothing matches.
        """
        plan = self._plans.get(component)
        if plan is None:
            plan = self._plan(component)
        for conditions, target in plan.candidates:
            if not conditions or all(condition.matches(input) for condition in conditions):
                return target
        raise ComponentError(
            ErrorCode.INVALID_INPUT, self._no_route(component, plan), retryable=False
        )

    def check(self, component: str) -> None:
        """Raise :class:`ConfigError` when no input could route ``component``.

        Conditions are not evaluated: a rule with conditions counts as possibly matching.
        """
        plan = self._plan(component)
        if not plan.candidates:
            raise ConfigError(self._no_route(component, plan), Location(self.source))

    def targets(self, component: str) -> list[tuple[str, str]]:
        """The ``(plugin, component name)`` pairs routing ``component`` may give, whatever the
        input, in routing order and without duplicates."""
        return list(dict.fromkeys(target for _, target in self._plan(component).candidates))

    def plugins_for(self, component: str) -> list[str]:
        """The plugins ``component`` may reach, in routing order, without duplicates."""
        return list(dict.fromkeys(plugin for plugin, _ in self.targets(component)))

    def _plan(self, component: str) -> _Plan:
        plan = self._plans.get(component)
        if plan is not None:
            return plan
        candidates: list[Candidate] = []
        matched: list[str] = []
        for route in self.routes:
            captures = route.pattern.match(component)
            if captures is None:
                continue
            matched.append(route.pattern.text)
            candidates.extend(_candidates(route, captures))
            if candidates and not candidates[-1][0]:
                break  # a rule without conditions always wins: later keys are unreachable
        plan = _Plan(tuple(candidates), tuple(matched))
        if len(self._plans) >= _CACHE_LIMIT:
            self._plans.clear()
        self._plans[component] = plan
        return plan

    def _no_route(self, component: str, plan: _Plan) -> str:
        if not plan.matched:
            reason = "no route pattern matches it"
        elif not plan.candidates:
            keys = ", ".join(f"'{text}'" for text in plan.matched)
            reason = f"every rule of the matching routes ({keys}) excludes it by name"
        else:
            reason = "no rule's conditions match the step input"
        patterns = ", ".join(f"'{text}'" for text in self.patterns) or "none"
        return f"no route for component '{component}': {reason}; routes are {patterns}"


def _candidates(route: Route, captures: dict[str, str]) -> Iterator[Candidate]:
    """The rules of ``route`` that admit the captured name, up to one without conditions."""
    name = "/" + captures[route.pattern.component_capture]
    for rule in route.rules:
        if rule.admits(name):
            yield rule.conditions, (rule.plugin, rule.target(name, captures))
            if not rule.conditions:
                return


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
        return ConfigError(message, Location(self.source, line_of(where, key)))

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

    def _at(self, where: Any, key: Any) -> str:
        line = line_of(where, key)
        return f"{self.source}:{line}" if line is not None else self.source

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
        rest = _PLACEHOLDER.sub("", doc)
        if "{" in rest or "}" in rest:
            raise self.error(
                f"{where}: 'component' {doc!r} has a brace that is not a '{{name}}' placeholder",
                rule, "component",
            )
        for found in _PLACEHOLDER.finditer(doc):
            if found.group(2) not in pattern.captures:
                captures = ", ".join(f"{{{name}}}" for name in pattern.captures)
                raise self.error(
                    f"{where}: 'component' uses '{found.group(0)}', which route "
                    f"'{pattern.text}' does not capture (it captures {captures})",
                    rule, "component",
                )
        return doc

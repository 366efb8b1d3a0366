"""Matching a component path against the routes: patterns, rules and the routing table.

The route language is described in :mod:`stepflow_stream.config.routes`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from stepflow_stream.core.jsonvalue import JSON
from stepflow_stream.core.paths import Path
from stepflow_stream.errors import ComponentError, ConfigError, ErrorCode, Location

PLACEHOLDER = re.compile(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)\}")
"""A ``{name}`` or ``{*name}`` segment; group 1 is the star, group 2 the name."""
_ONE_SEGMENT = "[^/]+"
_REST = "[^/]+(?:/[^/]+)*"
# A flow names few component paths; the bound only stops unbounded growth from odd callers.
_CACHE_LIMIT = 4096


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
        placeholder = PLACEHOLDER.fullmatch(segment)
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
        renamed = PLACEHOLDER.sub(lambda found: captures[found.group(2)], self.component)
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


"""Routes: which plugin runs a component, and under which name.

A route key is a path pattern of literal segments, ``{name}`` (exactly one segment) and a last
``{*name}`` (the rest: one or more segments). A key without placeholders is a prefix: ``/mock``
means ``/mock/{*component}``. Each key holds an ordered list of rules. Routing tries the keys
whose pattern matches, in config order, and within each key its rules in order; the first rule
whose conditions match the step input and whose ``componentAllow``/``componentDeny`` lists admit
the component wins. The plugin sees ``/`` plus what ``{*component}`` (else the last placeholder)
captured, unless the rule's ``component`` renames it.

Matching lives in ``_route_table`` and reading a config's ``routes`` mapping in
``_route_document`` (which builds on the table, so neither can host the other's names).
"""

from stepflow_stream.config._route_document import parse_routes
from stepflow_stream.config._route_table import (
    Candidate,
    Route,
    RouteCondition,
    RoutePattern,
    RoutePatternError,
    RouteRule,
    RouteTable,
    compile_pattern,
)

__all__ = [
    "Candidate",
    "Route",
    "RouteCondition",
    "RoutePattern",
    "RoutePatternError",
    "RouteRule",
    "RouteTable",
    "compile_pattern",
    "parse_routes",
]

"""Resolving a run's variables before it starts.

A variable's value is the first of: the run request, the environment variable its schema
names in ``env_var``, its schema ``default``, the flow's ``variables`` defaults; a ``$variable``
expression's own ``default`` applies last, at evaluation. A variable that is required (listed
in the schema's ``required``, or read without a default) and has none of these is an error
before the run starts. The environment is passed in, so this stays pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from stepflow_stream.core.flow import Flow
from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.core.schema import CompiledSchema, describe
from stepflow_stream.errors import InputError, Location

REDACTED = "[redacted]"


@dataclass(frozen=True, slots=True)
class ResolvedVariables:
    """Variable values for a run, and which of them are secrets (``is_secret``)."""

    values: JSONObject
    secrets: frozenset[str]

    def redacted(self) -> JSONObject:
        """The values with every secret replaced, for events, logs and API answers."""
        return {k: (REDACTED if k in self.secrets else v) for k, v in self.values.items()}


_NO_VARIABLES = ResolvedVariables({}, frozenset())


def resolve_variables(
    flow: Flow, provided: Mapping[str, JSON], env: Mapping[str, str]
) -> ResolvedVariables:
    """Resolve the variables a run of ``flow`` sees; raises :class:`InputError`."""
    if not provided and flow.variables_schema is None and not flow.variable_refs \
            and not flow.variable_defaults:
        return _NO_VARIABLES
    schema = flow.variables_schema or {}
    properties: dict[str, JSONObject] = schema.get("properties") or {}
    values: JSONObject = {}
    secrets = {name for name, prop in properties.items() if prop.get("is_secret")}
    names = [*properties, *flow.variable_defaults, *provided,
             *(ref.name for ref in flow.variable_refs)]
    for name in dict.fromkeys(names):
        prop = properties.get(name, {})
        if name in provided:
            values[name] = provided[name]
        elif isinstance(prop.get("env_var"), str) and prop["env_var"] in env:
            values[name] = env[prop["env_var"]]
        elif "default" in prop:
            values[name] = prop["default"]
        elif name in flow.variable_defaults:
            values[name] = flow.variable_defaults[name]
    # A reference's own default is a source too, so a schema-required variable read only
    # through references with defaults still resolves.
    defaulted = {ref.name for ref in flow.variable_refs if ref.has_default}
    undefaulted = {ref.name for ref in flow.variable_refs if not ref.has_default}
    required = set(schema.get("required") or ()) - (defaulted - undefaulted)
    required |= undefaulted
    for name in sorted(required - values.keys()):
        env_var = properties.get(name, {}).get("env_var")
        hint = f", or set the environment variable {env_var}" if env_var else ""
        raise InputError(
            f"variable '{name}' is required but has no value: pass --var {name}=VALUE{hint}",
            Location(flow.source, field=f"variables.{name}"),
        )
    if properties:
        _check_types(flow, schema, values)
    return ResolvedVariables(values, frozenset(secrets))


def _check_types(flow: Flow, schema: JSONObject, values: JSONObject) -> None:
    checked = {k: v for k, v in schema.items() if k not in ("required", "is_secret")}
    violations = CompiledSchema(checked).violations(values)
    if violations:
        raise InputError(
            f"variables do not match the variables schema: {describe(violations)}",
            Location(flow.source, field="variables"),
        )

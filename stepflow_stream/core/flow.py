"""The flow model: a Stepflow flow file parsed, compiled and checked.

:func:`parse_flow` takes a document (the result of :func:`~.source.parse_document`) and returns
a :class:`Flow` whose expressions are compiled, whose references and cycles are checked, and
whose schemas are ready to validate. Every error names the file, line, step and field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import jsonschema

from stepflow_stream.core.expressions import (
    Expr,
    ExpressionSyntaxError,
    VariableRef,
    compile_expression,
)
from stepflow_stream.core.jsonvalue import JSON, JSONObject, content_id, plain
from stepflow_stream.core.schema import CompiledSchema
from stepflow_stream.core.source import line_of, parse_document
from stepflow_stream.errors import FlowError, Location

FLOW_SCHEMA_URL = "https://stepflow.org/schemas/v1/flow.json"

OnErrorAction = Literal["fail", "useDefault", "retry", "skip"]


@dataclass(frozen=True, slots=True)
class OnError:
    """What to do when a step's component fails."""

    action: OnErrorAction = "fail"
    """``fail`` the run, ``useDefault`` (complete with ``default_value``), ``retry``, ``skip``."""
    default_value: JSON = None
    """The output used by ``useDefault``."""
    max_retries: int = 3
    """How many times ``retry`` calls the component again after the first failure."""


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a flow."""

    id: str
    component: str
    input: Expr
    on_error: OnError = OnError()
    skip: Expr | None = None
    must_execute: bool = False
    input_schema: CompiledSchema | None = None
    output_schema: CompiledSchema | None = None
    metadata: JSONObject = field(default_factory=dict)
    line: int | None = None
    affinity: Expr | None = None
    """The affinity key's expression (a stepflow-stream extension): tasks with one key go to
    one partition, one worker and one component-server instance. None: the run id."""

    branching: bool = field(init=False, compare=False)
    """Whether the steps it waits for can change as others settle (``$if``/``$coalesce``)."""

    def __post_init__(self) -> None:
        branching = any(expr.branching() for expr in self.expressions())
        object.__setattr__(self, "branching", branching)

    def expressions(self) -> tuple[Expr, ...]:
        """The step's expressions: its input, and its skip condition and affinity if set."""
        return tuple(e for e in (self.input, self.skip, self.affinity) if e is not None)

    def dependencies(self) -> frozenset[str]:
        """Every step this one may read, in its input, skip condition or affinity."""
        return frozenset().union(*(expr.step_refs() for expr in self.expressions()))


@dataclass(frozen=True, slots=True)
class TestCase:
    """A ``test.cases`` entry: an input and the FlowResult it must give."""

    name: str
    input: JSON
    output: JSON
    description: str | None = None
    line: int | None = None
    variables: JSONObject = field(default_factory=dict)
    """Variables for this case (an extension: Stepflow's cases have none)."""


@dataclass(frozen=True, slots=True)
class FlowTests:
    """The ``test`` section of a flow."""

    cases: tuple[TestCase, ...]
    config: JSONObject | None = None
    config_file: str | None = None


@dataclass(frozen=True, slots=True)
class Flow:
    """A parsed, compiled and checked flow."""

    document: JSONObject
    """The flow as plain JSON: what is stored as the flow's blob."""
    flow_id: str
    """The content id of ``document`` (sha256 of its compact JSON, as Stepflow's blobs)."""
    steps: tuple[Step, ...]
    steps_by_id: dict[str, Step]
    output: Expr
    name: str | None = None
    description: str | None = None
    version: str | None = None
    input_schema: CompiledSchema | None = None
    output_schema: CompiledSchema | None = None
    variables_schema: JSONObject | None = None
    variable_defaults: JSONObject = field(default_factory=dict)
    variable_refs: tuple[VariableRef, ...] = ()
    test: FlowTests | None = None
    source: str = "<flow>"
    warnings: tuple[str, ...] = ()

    output_branching: bool = field(init=False, compare=False)
    """Whether the steps the output waits for can change as others settle."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_branching", self.output.branching())

    @property
    def label(self) -> str:
        """The flow's name, or its source file."""
        return self.name or self.source


_FLOW_KEYS = {
    "schema": "schema",
    "name": "name",
    "description": "description",
    "version": "version",
    "schemas": "schemas",
    "inputSchema": "inputSchema",
    "input_schema": "inputSchema",
    "outputSchema": "outputSchema",
    "output_schema": "outputSchema",
    "variables_schema": "variablesSchema",
    "variablesSchema": "variablesSchema",
    "steps": "steps",
    "output": "output",
    "variables": "variables",
    "test": "test",
    "examples": "examples",
    "metadata": "metadata",
    "$schema": "schema",
}

_STEP_KEYS = {
    "id": "id",
    "component": "component",
    "input": "input",
    "onError": "onError",
    "on_error": "onError",
    "skip": "skip",
    "skipIf": "skip",
    "skip_if": "skip",
    "mustExecute": "mustExecute",
    "must_execute": "mustExecute",
    "inputSchema": "inputSchema",
    "input_schema": "inputSchema",
    "outputSchema": "outputSchema",
    "output_schema": "outputSchema",
    "metadata": "metadata",
    "description": "description",
    "affinity": "affinity",
    "affinityKey": "affinity",
    "affinity_key": "affinity",
}


def is_flow_document(document: JSON) -> bool:
    """A file is a flow if it has the Stepflow schema header or a ``steps`` list."""
    return isinstance(document, dict) and (
        document.get("schema") == FLOW_SCHEMA_URL or isinstance(document.get("steps"), list)
    )


def parse_flow_text(text: str, source: str = "<flow>") -> Flow:
    """Parse a flow from YAML or JSON text. ``source`` names the file in errors."""
    return parse_flow(parse_document(text, source, FlowError), source)


def parse_flow(document: JSON, source: str = "<flow>") -> Flow:
    """Build a :class:`Flow` from a parsed document; raises :class:`FlowError`."""
    return _FlowParser(document, source).parse()


class _FlowParser:
    def __init__(self, document: JSON, source: str) -> None:
        self.document = document
        self.source = source
        self.warnings: list[str] = []

    def error(self, message: str, where: Any = None, key: Any = None, **loc: Any) -> FlowError:
        return FlowError(message, Location(self.source, line_of(where, key), **loc))

    def parse(self) -> Flow:
        doc = self.document
        if not isinstance(doc, dict):
            raise self.error(f"a flow is a mapping, got {type(doc).__name__}")
        canonical = self._canonical_keys(doc, _FLOW_KEYS, "flow")
        steps_doc = canonical.get("steps", [])
        if not isinstance(steps_doc, list):
            raise self.error("'steps' is a list of steps", doc, "steps", field="steps")
        schemas = self._schemas(canonical)
        defs = schemas.get("$defs") if isinstance(schemas.get("$defs"), dict) else None
        props = schemas.get("properties", {}) if isinstance(schemas, dict) else {}
        step_schemas = props.get("steps", {}).get("properties", {}) if props else {}
        steps = tuple(self._step(i, s, step_schemas, defs) for i, s in enumerate(steps_doc))
        by_id: dict[str, Step] = {}
        for step in steps:
            if step.id in by_id:
                raise FlowError(
                    f"duplicate step id '{step.id}' (first at line {by_id[step.id].line})",
                    Location(self.source, step.line, step=step.id),
                )
            by_id[step.id] = step
        if "output" not in canonical:
            self.warnings.append(f"{self.source}: flow has no 'output'; its result is null")
        output = self._expression(canonical.get("output"), "output", doc, "output")
        self._check_references(steps, by_id, output, doc)
        self._check_cycles(steps, by_id)
        variables_schema = props.get("variables") or canonical.get("variablesSchema")
        variable_refs = output.variable_refs() + tuple(
            ref for step in steps for expr in step.expressions() for ref in expr.variable_refs()
        )
        return Flow(
            document=plain(doc),
            flow_id=content_id(plain(doc)),
            steps=steps,
            steps_by_id=by_id,
            output=output,
            name=_optional_str(canonical.get("name")),
            description=_optional_str(canonical.get("description")),
            version=_optional_str(canonical.get("version")),
            input_schema=self._schema(props.get("input") or canonical.get("inputSchema"),
                                      defs, "input schema"),
            output_schema=self._schema(props.get("output") or canonical.get("outputSchema"),
                                       defs, "output schema"),
            variables_schema=plain(variables_schema) if isinstance(variables_schema, dict)
            else None,
            variable_defaults=plain(canonical.get("variables") or {}),
            variable_refs=variable_refs,
            test=self._tests(canonical.get("test"), doc),
            source=self.source,
            warnings=tuple(self.warnings),
        )

    def _canonical_keys(
        self, mapping: dict[Any, Any], aliases: dict[str, str], what: str
    ) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in mapping.items():
            name = aliases.get(str(key))
            if name is None:
                at = Location(self.source, line_of(mapping, key))
                self.warnings.append(f"{at}: unknown {what} key '{key}' ignored")
                continue
            result[name] = value
        return result

    def _schemas(self, canonical: dict[str, Any]) -> dict[str, Any]:
        schemas = canonical.get("schemas") or {}
        if not isinstance(schemas, dict):
            raise self.error("'schemas' is a JSON Schema object", field="schemas")
        return schemas

    def _schema(
        self, schema: JSON, defs: JSONObject | None, what: str, step: str | None = None
    ) -> CompiledSchema | None:
        if schema is None:
            return None
        if not isinstance(schema, dict):
            raise self.error(f"the {what} is a JSON Schema object", step=step)
        try:
            return CompiledSchema(plain(schema), plain(defs) if defs else None)
        except jsonschema.SchemaError as exc:
            raise self.error(
                f"the {what} is not a valid JSON Schema: {exc.message}", schema, step=step
            ) from None

    def _expression(self, value: JSON, field_name: str, where: Any, key: Any,
                    step: str | None = None) -> Expr:
        try:
            return compile_expression(value, field_name)
        except ExpressionSyntaxError as exc:
            raise self.error(str(exc), where, key, step=step, field=exc.field) from None

    def _step(
        self, index: int, doc: JSON, step_schemas: JSONObject, defs: JSONObject | None
    ) -> Step:
        where = f"steps[{index}]"
        if not isinstance(doc, dict):
            raise self.error(f"{where} is a mapping with 'id' and 'component'", self.document)
        canonical = self._canonical_keys(doc, _STEP_KEYS, "step")
        step_id = canonical.get("id")
        if not isinstance(step_id, str) or not step_id:
            raise self.error(f"{where} needs an 'id' (a non-empty string)", doc, field="id")
        component = canonical.get("component")
        if not isinstance(component, str) or not component.startswith("/"):
            raise self.error(
                f"'component' is a path starting with '/', got {component!r}",
                doc, "component", step=step_id, field="component",
            )
        skip_doc = canonical.get("skip")
        affinity_doc = canonical.get("affinity")
        return Step(
            id=step_id,
            component=component,
            input=self._expression(canonical.get("input", {}), "input", doc, "input", step_id),
            on_error=self._on_error(canonical.get("onError"), doc, step_id),
            skip=None if skip_doc is None
            else self._expression(skip_doc, "skip", doc, "skip", step_id),
            must_execute=bool(canonical.get("mustExecute", False)),
            input_schema=self._schema(canonical.get("inputSchema"), defs, "input schema", step_id),
            output_schema=self._schema(
                canonical.get("outputSchema") or step_schemas.get(step_id), defs,
                "output schema", step_id,
            ),
            metadata=plain(canonical.get("metadata") or {}),
            line=line_of(doc),
            affinity=None if affinity_doc is None
            else self._expression(affinity_doc, "affinity", doc, "affinity", step_id),
        )

    def _on_error(self, doc: JSON, where: Any, step_id: str) -> OnError:
        if doc is None:
            return OnError()
        if not isinstance(doc, dict):
            raise self.error("'onError' is {action: ...}", where, "onError", step=step_id,
                             field="onError")
        action = doc.get("action", "fail")
        if action == "use_default":
            action = "useDefault"
        if action not in ("fail", "useDefault", "retry", "skip"):
            raise self.error(
                f"onError action must be fail, useDefault, retry or skip, got {action!r}",
                doc, "action", step=step_id, field="onError.action",
            )
        max_retries = doc.get("maxRetries", doc.get("max_retries", 3))
        if not isinstance(max_retries, int) or max_retries < 0:
            raise self.error("onError maxRetries is a non-negative integer", doc,
                             step=step_id, field="onError.maxRetries")
        default = doc.get("defaultValue", doc.get("default_value"))
        return OnError(action, plain(default), max_retries)

    def _check_references(
        self, steps: tuple[Step, ...], by_id: dict[str, Step], output: Expr, doc: Any
    ) -> None:
        for step in steps:
            # A bad reference in the affinity names that field; one in the input or the skip
            # condition names the step alone, as it always has.
            affinity = step.affinity.step_refs() if step.affinity is not None else frozenset()
            reads = ((None, step.dependencies() - affinity), ("affinity", affinity))
            for field_name, refs in reads:
                for ref in sorted(refs):
                    if ref not in by_id:
                        raise FlowError(
                            f"step '{step.id}' references unknown step '{ref}'",
                            Location(self.source, step.line, step=step.id, field=field_name),
                        )
        for ref in sorted(output.step_refs()):
            if ref not in by_id:
                raise self.error(f"the flow output references unknown step '{ref}'", doc,
                                 "output", field="output")

    def _check_cycles(self, steps: tuple[Step, ...], by_id: dict[str, Step]) -> None:
        white, grey, black = 0, 1, 2
        color = dict.fromkeys(by_id, white)
        for root in steps:
            if color[root.id] != white:
                continue
            stack: list[tuple[str, list[str]]] = [(root.id, sorted(by_id[root.id].dependencies()))]
            color[root.id] = grey
            path = [root.id]
            while stack:
                node, deps = stack[-1]
                if not deps:
                    stack.pop()
                    path.pop()
                    color[node] = black
                    continue
                dep = deps.pop()
                if color[dep] == grey:
                    cycle = [*path[path.index(dep):], dep]
                    names = " -> ".join(cycle)
                    raise FlowError(
                        f"steps '{cycle[-2]}' and '{dep}' form a cycle: {names}",
                        Location(self.source, by_id[cycle[-2]].line, step=cycle[-2]),
                    )
                if color[dep] == white:
                    color[dep] = grey
                    path.append(dep)
                    stack.append((dep, sorted(by_id[dep].dependencies())))

    def _tests(self, doc: JSON, where: Any) -> FlowTests | None:
        if doc is None:
            return None
        if not isinstance(doc, dict):
            raise self.error("'test' is {config?, configFile?, cases: [...]}", where, "test")
        cases_doc = doc.get("cases") or []
        if not isinstance(cases_doc, list):
            raise self.error("'test.cases' is a list", doc, "cases", field="test.cases")
        cases = []
        for i, case in enumerate(cases_doc):
            if not isinstance(case, dict):
                raise self.error(f"test.cases[{i}] is a mapping", doc, "cases")
            cases.append(
                TestCase(
                    name=str(case.get("name", f"case {i + 1}")),
                    input=plain(case.get("input")),
                    output=plain(case.get("output")),
                    description=_optional_str(case.get("description")),
                    line=line_of(case),
                    variables=plain(case.get("variables") or {}),
                )
            )
        config = doc.get("config")
        config_file = doc.get("configFile", doc.get("config_file"))
        return FlowTests(
            cases=tuple(cases),
            # Not plain(): mock behaviours in an inline config are keyed by whole inputs.
            config=config if isinstance(config, dict) else None,
            config_file=config_file if isinstance(config_file, str) else None,
        )


def _optional_str(value: JSON) -> str | None:
    return None if value is None else str(value)


"""Expressions: compiled once per flow, evaluated lazily against a run's state.

Any JSON value is an expression; objects with one of the keys ``$input``, ``$step``,
``$variable``, ``$literal``, ``$if``, ``$coalesce`` (or the older ``$from``) are special.
Other ``$``-keys (``$schema``, ``$ref``, ``$defs`` ...) are plain data, so JSON Schemas can be
passed to components unchanged.

Evaluation is demand-driven. It returns a value, or :class:`Pending` naming the steps whose
outputs it still needs, or :data:`SKIPPED` when it references a skipped step. An ``$if`` needs
only its condition and then the branch it takes; a ``$coalesce`` needs its items one at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stepflow_stream.core.jsonvalue import JSON, plain
from stepflow_stream.core.paths import Path, PathSyntaxError, parse_path


class Pending:
    """The steps an evaluation is waiting for."""

    __slots__ = ("steps",)

    def __init__(self, steps: frozenset[str]) -> None:
        self.steps = steps

    def __repr__(self) -> str:
        return f"Pending({sorted(self.steps)})"


class _Skipped:
    __slots__ = ()

    def __repr__(self) -> str:
        return "SKIPPED"


SKIPPED: Any = _Skipped()
"""The value of an expression that references a skipped step (without ``onSkip``)."""


class Scope:
    """What an expression can see: the input, variables, and the steps settled so far."""

    __slots__ = ("input", "outputs", "skipped", "skipped_as_null", "variables")

    def __init__(
        self,
        input: JSON,
        variables: Mapping[str, JSON],
        outputs: Mapping[str, JSON],
        skipped: frozenset[str] | set[str],
        skipped_as_null: bool = False,
    ) -> None:
        self.input = input
        self.variables = variables
        self.outputs = outputs
        self.skipped = skipped
        self.skipped_as_null = skipped_as_null


class ExpressionSyntaxError(ValueError):
    """An expression object of the wrong shape; ``field`` is the path to it in the flow."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class Expr:
    """A compiled expression."""

    __slots__ = ()

    def evaluate(self, scope: Scope) -> Any:
        """The value, a :class:`Pending`, or :data:`SKIPPED`."""
        raise NotImplementedError

    def step_refs(self) -> frozenset[str]:
        """Every step id this expression may read, in any branch (for validation)."""
        return frozenset()

    def variable_refs(self) -> tuple[VariableRef, ...]:
        """Every ``$variable`` in this expression."""
        return ()

    def branching(self) -> bool:
        """Whether which steps it needs can change as steps settle (an ``$if`` or
        ``$coalesce`` inside)."""
        return False


class Const(Expr):
    __slots__ = ("value",)

    def __init__(self, value: JSON) -> None:
        self.value = value

    def evaluate(self, scope: Scope) -> Any:
        return self.value


class InputRef(Expr):
    __slots__ = ("path",)

    def __init__(self, path: Path) -> None:
        self.path = path

    def evaluate(self, scope: Scope) -> Any:
        return self.path.select(scope.input)


@dataclass(frozen=True, slots=True)
class OnSkip:
    """What a reference to a skipped step gives: skip the reader, or a default value."""

    use_default: bool
    default_value: JSON = None


class StepRef(Expr):
    __slots__ = ("on_skip", "path", "step_id")

    def __init__(self, step_id: str, path: Path, on_skip: OnSkip | None) -> None:
        self.step_id = step_id
        self.path = path
        self.on_skip = on_skip

    def evaluate(self, scope: Scope) -> Any:
        outputs = scope.outputs
        if self.step_id in outputs:
            return self.path.select(outputs[self.step_id])
        if self.step_id in scope.skipped:
            if self.on_skip is not None and self.on_skip.use_default:
                return self.on_skip.default_value
            return None if scope.skipped_as_null else SKIPPED
        return Pending(frozenset((self.step_id,)))

    def step_refs(self) -> frozenset[str]:
        return frozenset((self.step_id,))


class VariableRef(Expr):
    __slots__ = ("default", "has_default", "name")

    def __init__(self, name: str, has_default: bool, default: JSON) -> None:
        self.name = name
        self.has_default = has_default
        self.default = default

    def evaluate(self, scope: Scope) -> Any:
        variables = scope.variables
        if self.name in variables:
            return variables[self.name]
        # Required variables are checked before a run starts; a missing optional one is null.
        return self.default

    def variable_refs(self) -> tuple[VariableRef, ...]:
        return (self,)


class IfExpr(Expr):
    __slots__ = ("condition", "otherwise", "then")

    def __init__(self, condition: Expr, then: Expr, otherwise: Expr) -> None:
        self.condition = condition
        self.then = then
        self.otherwise = otherwise

    def evaluate(self, scope: Scope) -> Any:
        condition = self.condition.evaluate(scope)
        if condition is SKIPPED or type(condition) is Pending:
            return condition
        return (self.then if condition else self.otherwise).evaluate(scope)

    def step_refs(self) -> frozenset[str]:
        return self.condition.step_refs() | self.then.step_refs() | self.otherwise.step_refs()

    def branching(self) -> bool:
        return True

    def variable_refs(self) -> tuple[VariableRef, ...]:
        return (
            self.condition.variable_refs()
            + self.then.variable_refs()
            + self.otherwise.variable_refs()
        )


class CoalesceExpr(Expr):
    """The first item that is neither null nor a skipped reference."""

    __slots__ = ("items",)

    def __init__(self, items: tuple[Expr, ...]) -> None:
        self.items = items

    def evaluate(self, scope: Scope) -> Any:
        for item in self.items:
            value = item.evaluate(scope)
            if type(value) is Pending:
                return value
            if value is not None and value is not SKIPPED:
                return value
        return None

    def step_refs(self) -> frozenset[str]:
        return frozenset().union(*(item.step_refs() for item in self.items))

    def variable_refs(self) -> tuple[VariableRef, ...]:
        return tuple(ref for item in self.items for ref in item.variable_refs())

    def branching(self) -> bool:
        return True


class ObjectExpr(Expr):
    __slots__ = ("fields",)

    def __init__(self, fields: tuple[tuple[str, Expr], ...]) -> None:
        self.fields = fields

    def evaluate(self, scope: Scope) -> Any:
        result: dict[str, Any] = {}
        pending: set[str] | None = None
        skipped = False
        for key, expr in self.fields:
            value = expr.evaluate(scope)
            if value is SKIPPED:
                skipped = True
            elif type(value) is Pending:
                pending = set(value.steps) if pending is None else pending | value.steps
            else:
                result[key] = value
        # Waiting wins over skipping: which steps a value needs must not depend on the order
        # in which other steps happened to finish (or a crash would change the answer).
        if pending is not None:
            return Pending(frozenset(pending))
        return SKIPPED if skipped else result

    def step_refs(self) -> frozenset[str]:
        return frozenset().union(*(expr.step_refs() for _, expr in self.fields))

    def variable_refs(self) -> tuple[VariableRef, ...]:
        return tuple(ref for _, expr in self.fields for ref in expr.variable_refs())

    def branching(self) -> bool:
        return any(expr.branching() for _, expr in self.fields)


class ListExpr(Expr):
    __slots__ = ("items",)

    def __init__(self, items: tuple[Expr, ...]) -> None:
        self.items = items

    def evaluate(self, scope: Scope) -> Any:
        result: list[Any] = []
        pending: set[str] | None = None
        skipped = False
        for expr in self.items:
            value = expr.evaluate(scope)
            if value is SKIPPED:
                skipped = True
            elif type(value) is Pending:
                pending = set(value.steps) if pending is None else pending | value.steps
            else:
                result.append(value)
        if pending is not None:
            return Pending(frozenset(pending))
        return SKIPPED if skipped else result

    def step_refs(self) -> frozenset[str]:
        return frozenset().union(*(expr.step_refs() for expr in self.items))

    def variable_refs(self) -> tuple[VariableRef, ...]:
        return tuple(ref for expr in self.items for ref in expr.variable_refs())

    def branching(self) -> bool:
        return any(expr.branching() for expr in self.items)


_EXPRESSION_KEYS = frozenset(
    {"$input", "$step", "$variable", "$literal", "$if", "$coalesce", "$from"}
)


def compile_expression(value: JSON, field: str = "") -> Expr:
    """Compile a JSON value into an :class:`Expr`.

    ``field`` is the path of the value in the flow (``steps[2].input.text``), used in errors.
    Raises :class:`ExpressionSyntaxError`.
    """
    if isinstance(value, dict):
        special = _EXPRESSION_KEYS.intersection(value)
        if special:
            if len(special) > 1:
                raise ExpressionSyntaxError(
                    f"an expression object has one of {sorted(_EXPRESSION_KEYS)}, "
                    f"found {sorted(special)}",
                    field,
                )
            return _compile_special(next(iter(special)), value, field)
        fields = tuple(
            (str(key), compile_expression(item, _join(field, str(key))))
            for key, item in value.items()
        )
        if all(type(expr) is Const for _, expr in fields):
            return Const({key: expr.evaluate(_EMPTY_SCOPE) for key, expr in fields})
        return ObjectExpr(fields)
    if isinstance(value, list):
        items = tuple(compile_expression(item, f"{field}[{i}]") for i, item in enumerate(value))
        if all(type(expr) is Const for expr in items):
            return Const([expr.evaluate(_EMPTY_SCOPE) for expr in items])
        return ListExpr(items)
    return Const(value)


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _path(value: JSON, field: str) -> Path:
    if value is None:
        return parse_path("")
    if not isinstance(value, str):
        raise ExpressionSyntaxError(f"a path is a string, got {type(value).__name__}", field)
    try:
        return parse_path(value)
    except PathSyntaxError as exc:
        raise ExpressionSyntaxError(str(exc), field) from None


def _on_skip(value: JSON, field: str) -> OnSkip | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ExpressionSyntaxError("onSkip is an object {action, defaultValue?}", field)
    action = value.get("action")
    if action in ("useDefault", "use_default"):
        default = value.get("defaultValue", value.get("default_value"))
        return OnSkip(True, plain(default))
    if action == "skip":
        return OnSkip(False)
    raise ExpressionSyntaxError(
        f"onSkip action must be 'skip' or 'useDefault', got {action!r}", field
    )


def _compile_special(key: str, value: dict[Any, Any], field: str) -> Expr:
    here = _join(field, key)
    operand = value[key]
    if key == "$literal":
        return Const(plain(operand))
    if key == "$input":
        path_text = operand
        if "path" in value and operand in (None, "$", ""):
            path_text = value["path"]
        return InputRef(_path(path_text or "$", here))
    if key == "$step":
        if not isinstance(operand, str) or not operand:
            raise ExpressionSyntaxError("$step names a step id (a non-empty string)", here)
        on_skip = _on_skip(value.get("onSkip", value.get("on_skip")), _join(field, "onSkip"))
        return StepRef(operand, _path(value.get("path"), _join(field, "path")), on_skip)
    if key == "$from":
        return _compile_from(operand, value, field)
    if key == "$variable":
        if not isinstance(operand, str) or not operand:
            raise ExpressionSyntaxError("$variable names a variable (a non-empty string)", here)
        return VariableRef(operand, "default" in value, plain(value.get("default")))
    if key == "$if":
        if "then" not in value:
            raise ExpressionSyntaxError("$if needs a 'then' branch", field)
        return IfExpr(
            compile_expression(operand, here),
            compile_expression(value["then"], _join(field, "then")),
            compile_expression(value.get("else"), _join(field, "else")),
        )
    if not isinstance(operand, list):
        raise ExpressionSyntaxError("$coalesce takes a list of expressions", here)
    return CoalesceExpr(
        tuple(compile_expression(item, f"{here}[{i}]") for i, item in enumerate(operand))
    )


def _compile_from(operand: JSON, value: dict[Any, Any], field: str) -> Expr:
    here = _join(field, "$from")
    path = _path(value.get("path"), _join(field, "path"))
    if isinstance(operand, dict) and operand.get("workflow") == "input":
        return InputRef(path)
    if isinstance(operand, dict) and isinstance(operand.get("step"), str):
        on_skip = _on_skip(value.get("onSkip", value.get("on_skip")), _join(field, "onSkip"))
        return StepRef(operand["step"], path, on_skip)
    raise ExpressionSyntaxError("$from is {workflow: input} or {step: <id>}", here)


_EMPTY_SCOPE = Scope(None, {}, {}, frozenset())

"""Shared machinery of the property tests: random flows, a test plugin, a reference evaluator.

Nothing here reuses the engine's expression code. The reference evaluator reads the raw flow
document and implements the semantics of ``/work/shared/spec/flows.md`` eagerly and recursively.

Laziness has one corner the spec leaves open: an object or list whose items include a reference
to a skipped step is skipped, and the engine may decide that before or after it has asked for
the steps its *other* items read (it depends on which facts are known when the reader is first
evaluated). So the reference computes two sets of needed steps:

* ``needed_max``: every step some evaluation may ask for (all items of an object/list are
  evaluated, an ``$if`` only its condition and taken branch, a ``$coalesce`` its items up to the
  first non-null one);
* ``needed_min``: the steps every evaluation order must ask for (a skipped object/list only
  needs what its skipped items need in common).

Where the two agree, the engine's needed set must equal them exactly.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from stepflow_stream.config import Config, parse_config_document
from stepflow_stream.core.events import (
    Event,
    FlowResult,
    StepCompleted,
    StepFailed,
    StepsNeeded,
    StepStarted,
)
from stepflow_stream.core.flow import parse_flow
from stepflow_stream.errors import ComponentError
from stepflow_stream.journal.memory import MemoryBlobStore, MemoryJournal
from stepflow_stream.plugins.base import ComponentInfo, ExecutionContext, Plugin
from stepflow_stream.runtime.embedded import EmbeddedRuntime

JSON = Any
RUN_ID = "prop-run"
FAILED_CODE = "COMPONENT_FAILED"

# Paths -----------------------------------------------------------------------------------------

STAR = "*wildcard*"
"""A wildcard segment in the reference's own path representation."""

INPUT_PATHS: dict[str, tuple[Any, ...]] = {
    "$": (),
    "x": ("x",),
    "f": ("f",),
    "missing": ("missing",),
    "$.x": ("x",),
    "$.x.k": ("x", "k"),
    "$.o.k": ("o", "k"),
    "$.o['m']": ("o", "m"),
    "$.l[0]": ("l", 0),
    "$.l[-1]": ("l", -1),
    "$.l[5]": ("l", 5),
    "$.l[*]": ("l", STAR),
    "$.o.*": ("o", STAR),
}

STEP_PATHS: dict[str, tuple[Any, ...]] = {
    "v": ("v",),
    "echo": ("echo",),
    "nope": ("nope",),
    "$": (),
    "$.v": ("v",),
    "$['v']": ("v",),
    "$.echo.a": ("echo", "a"),
    "$.echo[0]": ("echo", 0),
    "$.echo[*]": ("echo", STAR),
}


def segments_of(table: dict[str, tuple[Any, ...]], text: str) -> tuple[Any, ...]:
    """The reference's segments for a path text: from the table, or a plain field name."""
    if text in table:
        return table[text]
    assert not text.startswith("$"), f"no reference segments for {text!r}"
    return (text,) if text else ()


def select(value: JSON, segments: tuple[Any, ...]) -> JSON:
    """What a path names in ``value``, or None when it names nothing."""
    for i, segment in enumerate(segments):
        if segment == STAR:
            if isinstance(value, dict):
                items = list(value.values())
            elif isinstance(value, list):
                items = value
            else:
                return None
            return [select(item, segments[i + 1 :]) for item in items]
        if isinstance(segment, str):
            if not isinstance(value, dict):
                return None
            value = value.get(segment)
        else:
            if not isinstance(value, list) or not -len(value) <= segment < len(value):
                return None
            value = value[segment]
    return value


def truthy(value: JSON) -> bool:
    """JSON truthiness as the spec states it: null, false, 0, "", [] and {} are falsy."""
    if value is None or value is False:
        return False
    if value is True:
        return True
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True


def canonical(value: JSON) -> str:
    """A strict text form: tells 1 from true and {"a":1,"b":2} from {"b":2,"a":1}."""
    return json.dumps(value, separators=(",", ":"))


# The test components ---------------------------------------------------------------------------

PICKS: list[JSON] = [None, 0, 1, 2, "", "t", [], {}, True, False, [1, 2], {"a": 1}]


def digest(*parts: JSON) -> int:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def component_output(component: str, value: JSON) -> JSON:
    """What the pure components ``/f``, ``/g`` and ``/flaky`` return for an input."""
    text = canonical(value)
    echo = value if len(text) <= 300 else {"big": digest("big", value) % 1000}
    return {"v": PICKS[digest(component, value) % len(PICKS)], "echo": echo}


def flaky_failures(value: JSON) -> int:
    """How many first attempts of ``/flaky`` fail on this input (0, 1 or 2)."""
    return digest("flaky", value) % 3


class PropPlugin(Plugin):
    """Deterministic components: ``/f`` and ``/g`` (pure), ``/fail`` (always fails, not
    retryable), ``/flaky`` (fails its first ``flaky_failures(input)`` attempts, retryable)."""

    COMPONENTS = ("/f", "/g", "/fail", "/flaky")

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str]] = []

    def has_component(self, component: str) -> bool | None:
        return component in self.COMPONENTS

    async def list_components(self) -> list[ComponentInfo]:
        return [ComponentInfo(c) for c in self.COMPONENTS]

    async def execute(self, component: str, input: JSON, context: ExecutionContext) -> JSON:
        self.calls.append((context.step_id, context.attempt, component))
        # Vary completion order deterministically.
        for _ in range(digest("yield", context.step_id, context.attempt) % 4):
            await asyncio.sleep(0)
        return task_outcome(component, input, context.attempt)


def task_outcome(component: str, value: JSON, attempt: int) -> JSON:
    """The output of a call, or raise its ComponentError."""
    if component == "/fail":
        raise ComponentError(FAILED_CODE, "boom", retryable=False)
    if component == "/flaky" and attempt <= flaky_failures(value):
        raise ComponentError(FAILED_CODE, f"flaky attempt {attempt}", retryable=True)
    return component_output(component, value)


def make_config() -> Config:
    return parse_config_document(
        {
            "plugins": {"test": {"type": "mock"}},
            "routes": {"/test/{*component}": [{"plugin": "test"}]},
        },
        "<property config>",
    )


CONFIG = make_config()


# Strategies -----------------------------------------------------------------------------------

SCALARS: list[JSON] = [None, True, False, 0, 1, -3, 42, "", "a", "xyz"]
scalars = st.sampled_from(SCALARS)
small_json = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["k", "m", "a"]), inner, max_size=2),
    max_leaves=5,
)
inputs = st.fixed_dictionaries(
    {},
    optional={
        "x": small_json,
        "f": scalars,
        "l": st.lists(small_json, max_size=3),
        "o": st.fixed_dictionaries({}, optional={"k": small_json, "m": small_json}),
    },
)

LITERALS: list[JSON] = [
    {"$step": "no_such_step"},
    {"$input": "x"},
    {"a": {"$if": True, "then": 1}},
    [1, {"$coalesce": []}],
    "$step",
    None,
    0,
]


def input_refs() -> st.SearchStrategy[JSON]:
    plain = st.sampled_from(sorted(INPUT_PATHS)).map(lambda p: {"$input": p})
    with_path = st.sampled_from(sorted(INPUT_PATHS)).map(lambda p: {"$input": "$", "path": p})
    return plain | with_path


def step_refs(ids: tuple[str, ...]) -> st.SearchStrategy[JSON]:
    on_skip = st.one_of(
        st.none(),
        st.just({"action": "skip"}),
        st.just({"action": "useDefault"}),
        scalars.map(lambda v: {"action": "useDefault", "defaultValue": v}),
    )

    def build(step: str, path: str | None, skip: JSON) -> JSON:
        ref: dict[str, JSON] = {"$step": step}
        if path is not None:
            ref["path"] = path
        if skip is not None:
            ref["onSkip"] = skip
        return ref

    return st.builds(
        build,
        st.sampled_from(ids) | st.sampled_from(ids[-2:]),  # favour recent steps: longer chains
        st.none() | st.sampled_from(sorted(STEP_PATHS)),
        st.none() | st.none() | on_skip,
    )


_EXPR_CACHE: dict[tuple[tuple[str, ...], int], st.SearchStrategy[JSON]] = {}


def expressions(ids: tuple[str, ...], depth: int) -> st.SearchStrategy[JSON]:
    """Expression trees over the input, the steps ``ids``, literals, $if, $coalesce, objects
    and lists, at most ``depth`` levels deep."""
    key = (ids, depth)
    if key in _EXPR_CACHE:
        return _EXPR_CACHE[key]
    leaves: list[st.SearchStrategy[JSON]] = [scalars, input_refs()]
    if ids:
        leaves += [step_refs(ids)] * 3
    leaves.append(st.sampled_from(LITERALS).map(lambda v: {"$literal": v}))
    if depth == 0:
        strategy = st.one_of(*leaves)
    else:
        sub = expressions(ids, depth - 1)

        def if_expr(cond: JSON, then: JSON, otherwise: JSON, has_else: bool) -> JSON:
            expr = {"$if": cond, "then": then}
            if has_else:
                expr["else"] = otherwise
            return expr

        strategy = st.one_of(
            *leaves,
            st.builds(if_expr, sub, sub, sub, st.booleans()),
            st.lists(sub, min_size=1, max_size=3).map(lambda items: {"$coalesce": items}),
            st.dictionaries(st.sampled_from(["a", "b", "c"]), sub, min_size=1, max_size=3),
            st.lists(sub, max_size=3),
        )
    _EXPR_CACHE[key] = strategy
    return strategy


NAMES = ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "m", "n", "p", "q", "r")

KINDS_ALL = ("f",) * 5 + ("g",) * 3 + ("default", "flaky", "flaky", "fail")
KINDS_NO_FAIL = ("f",) * 5 + ("g",) * 3 + ("default", "flaky", "flaky")


@st.composite
def flows(
    draw: st.DrawFn,
    kinds: tuple[str, ...] = KINDS_ALL,
    min_steps: int = 2,
    max_steps: int = 12,
    depth: int = 2,
    fan_in: bool = False,
) -> dict[str, JSON]:
    """A random DAG flow document: steps only read earlier steps (in dependency order; the
    file order is shuffled), every step's component is one of the test plugin's.

    ``fan_in`` makes skip conditions more frequent and step inputs lists or objects of
    several expressions that read steps: the shapes where a skipped reference meets others."""
    n = draw(st.integers(min_steps, max_steps))
    names = draw(st.permutations(NAMES))[:n]
    steps: list[dict[str, JSON]] = []
    for i, name in enumerate(names):
        earlier = tuple(names[:i])
        step: dict[str, JSON] = {"id": name}
        kind = draw(st.sampled_from(kinds))
        if kind in ("f", "g"):
            step["component"] = f"/test/{kind}"
        elif kind == "fail":
            step["component"] = "/test/fail"
            step["onError"] = {"action": "fail"}
        elif kind == "default":
            step["component"] = "/test/fail"
            step["onError"] = draw(
                st.just({"action": "useDefault"})
                | scalars.map(lambda v: {"action": "useDefault", "defaultValue": v})
            )
        else:
            step["component"] = "/test/flaky"
            retries = draw(st.sampled_from([None, None, 0, 1, 2, 3]))
            step["onError"] = (
                {"action": "retry"} if retries is None
                else {"action": "retry", "maxRetries": retries}
            )
        if fan_in and earlier:
            parts = draw(st.lists(step_refs(earlier) | expressions(earlier, depth - 1),
                                  min_size=2, max_size=3))
            step["input"] = parts if draw(st.booleans()) else {
                key: part for key, part in zip("abc", parts, strict=False)}
        else:
            step["input"] = draw(expressions(earlier, depth))
        if draw(st.integers(0, 1 if fan_in else 3)) == 0:
            # With fan-in, skip conditions mostly read a step: the skip waits for a task.
            skip = step_refs(earlier) if fan_in and earlier else expressions(earlier, 1)
            step["skip"] = draw(skip | expressions(earlier, 1))
        if draw(st.integers(0, 6)) == 0:
            step["mustExecute"] = True
        steps.append(step)
    # The output reads at least one step (most often one of the last two), among other things.
    refs = draw(st.lists(step_refs(tuple(names)), min_size=1, max_size=3))
    others = draw(st.lists(expressions(tuple(names), depth), max_size=3))
    items = [(refs + others)[j] for j in draw(st.permutations(range(len(refs) + len(others))))]
    shape = draw(st.sampled_from(["list", "object", "one"]))
    if shape == "object":
        output: JSON = {f"o{j}": item for j, item in enumerate(items)}
    elif shape == "list" or len(items) > 1:
        output = items
    else:
        output = items[0]
    order = draw(st.permutations(range(n)))
    return {"name": "property", "steps": [steps[j] for j in order], "output": output}


# The reference evaluator ------------------------------------------------------------------------


class _Skip:
    def __repr__(self) -> str:
        return "SKIP"


class _Fail:
    def __repr__(self) -> str:
        return "FAIL"


SKIP: Any = _Skip()
FAIL: Any = _Fail()


@dataclass(frozen=True)
class Val:
    """An evaluation: a value (or SKIP / FAIL) and the steps it reads, at most and at least."""

    value: JSON
    max: frozenset[str] = frozenset()
    min: frozenset[str] = frozenset()


@dataclass
class StepOutcome:
    kind: str
    """``ok``, ``skip`` or ``fail``."""
    value: JSON = None
    refs_max: frozenset[str] = frozenset()
    refs_min: frozenset[str] = frozenset()
    invoked: bool = False
    """Whether the component is called (the step is not skipped and its input has a value)."""
    attempts: int = 0
    input: JSON = None


@dataclass
class Reference:
    """The reference answer for one flow and input."""

    value: JSON
    must_fail: bool
    may_fail: bool
    needed_max: set[str]
    needed_min: set[str]
    ran_max: set[str]
    ran_min: set[str]
    outcomes: dict[str, StepOutcome] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        """True when the run's outcome and needed steps do not depend on evaluation order."""
        return self.needed_min == self.needed_max and self.must_fail == self.may_fail


class _Evaluator:
    def __init__(self, doc: dict[str, JSON], input: JSON) -> None:
        self.steps = {step["id"]: step for step in doc["steps"]}
        self.input = input
        self.memo: dict[str, StepOutcome] = {}
        self.maybe_fail = False

    def ev(self, expr: JSON, as_null: bool) -> Val:
        if isinstance(expr, list):
            return self._all([self.ev(item, as_null) for item in expr], lambda vs: vs)
        if not isinstance(expr, dict):
            return Val(expr)
        if "$literal" in expr:
            return Val(expr["$literal"])
        if "$input" in expr:
            path = expr["$input"]
            if "path" in expr and path in (None, "$", ""):
                path = expr["path"]
            return Val(select(self.input, segments_of(INPUT_PATHS, path)))
        if "$step" in expr:
            return self._step_ref(expr, as_null)
        if "$if" in expr:
            cond = self.ev(expr["$if"], as_null)
            if cond.value is SKIP or cond.value is FAIL:
                return cond
            branch = self.ev(expr["then"] if truthy(cond.value) else expr.get("else"), as_null)
            return Val(branch.value, cond.max | branch.max, cond.min | branch.min)
        if "$coalesce" in expr:
            reads_max: frozenset[str] = frozenset()
            reads_min: frozenset[str] = frozenset()
            for item in expr["$coalesce"]:
                got = self.ev(item, as_null)
                reads_max |= got.max
                reads_min |= got.min
                if got.value is FAIL:
                    return Val(FAIL, reads_max, reads_min)
                if got.value is not None and got.value is not SKIP:
                    return Val(got.value, reads_max, reads_min)
            return Val(None, reads_max, reads_min)
        keys = list(expr)
        return self._all(
            [self.ev(expr[k], as_null) for k in keys], lambda vs: dict(zip(keys, vs, strict=True))
        )

    def _all(self, items: list[Val], build: Any) -> Val:
        reads_max = frozenset().union(*(i.max for i in items))
        skipped = [i for i in items if i.value is SKIP]
        failed = [i for i in items if i.value is FAIL]
        if skipped:
            if failed:
                # Whether the reader is skipped first or the failure lands first is a race.
                self.maybe_fail = True
            common = frozenset.intersection(*(i.min for i in skipped))
            return Val(SKIP, reads_max, common)
        reads_min = frozenset().union(*(i.min for i in items))
        if failed:
            return Val(FAIL, reads_max, reads_min)
        return Val(build([i.value for i in items]), reads_max, reads_min)

    def _step_ref(self, expr: dict[str, JSON], as_null: bool) -> Val:
        step_id = expr["$step"]
        outcome = self.outcome(step_id)
        reads = frozenset((step_id,))
        if outcome.kind == "fail":
            return Val(FAIL, reads, reads)
        if outcome.kind == "skip":
            on_skip = expr.get("onSkip") or {}
            if on_skip.get("action") == "useDefault":
                return Val(on_skip.get("defaultValue"), reads, reads)
            return Val(None if as_null else SKIP, reads, reads)
        path = expr.get("path")
        return Val(select(outcome.value, segments_of(STEP_PATHS, path or "")),
                   reads, reads)

    def outcome(self, step_id: str) -> StepOutcome:
        if step_id in self.memo:
            return self.memo[step_id]
        step = self.steps[step_id]
        refs_max: frozenset[str] = frozenset()
        refs_min: frozenset[str] = frozenset()
        result: StepOutcome | None = None
        if "skip" in step:
            cond = self.ev(step["skip"], False)
            refs_max, refs_min = cond.max, cond.min
            if cond.value is FAIL:
                result = StepOutcome("fail")
            elif cond.value is SKIP or truthy(cond.value):
                result = StepOutcome("skip")
        if result is None:
            got = self.ev(step["input"], False)
            refs_max |= got.max
            refs_min |= got.min
            if got.value is FAIL:
                result = StepOutcome("fail")
            elif got.value is SKIP:
                result = StepOutcome("skip")
            else:
                result = self._invoke(step, got.value)
        result.refs_max, result.refs_min = refs_max, refs_min
        self.memo[step_id] = result
        return result

    def _invoke(self, step: dict[str, JSON], value: JSON) -> StepOutcome:
        component = step["component"].removeprefix("/test")
        on_error = step.get("onError") or {"action": "fail"}
        attempts = 1
        if component == "/fail":
            ok = False
        elif component == "/flaky":
            failures = flaky_failures(value)
            retries = on_error.get("maxRetries", 3) if on_error["action"] == "retry" else 0
            attempts = min(failures, retries) + 1
            ok = failures <= retries
        else:
            ok = True
        if ok:
            out = StepOutcome("ok", component_output(component, value))
        elif on_error["action"] == "useDefault":
            out = StepOutcome("ok", on_error.get("defaultValue"))
        else:
            out = StepOutcome("fail")
        out.invoked, out.attempts, out.input = True, attempts, value
        return out


def reference(doc: dict[str, JSON], input: JSON) -> Reference:
    """Evaluate ``doc`` on ``input`` by the spec, eagerly."""
    ev = _Evaluator(doc, input)
    out = ev.ev(doc.get("output"), True)
    must = {step["id"] for step in doc["steps"] if step.get("mustExecute")}
    for step_id in sorted(must):
        ev.outcome(step_id)

    def closure(roots: set[str], attr: str) -> set[str]:
        needed: set[str] = set()
        stack = list(roots)
        while stack:
            step_id = stack.pop()
            if step_id not in needed:
                needed.add(step_id)
                stack.extend(getattr(ev.outcome(step_id), attr))
        return needed

    needed_max = closure(set(out.max) | must, "refs_max")
    needed_min = closure(set(out.min) | must, "refs_min")
    fails = {s for s, o in ev.memo.items() if o.kind == "fail"}
    return Reference(
        value=out.value,
        must_fail=out.value is FAIL or bool(fails & needed_min),
        may_fail=out.value is FAIL or bool(fails & needed_max) or ev.maybe_fail,
        needed_max=needed_max,
        needed_min=needed_min,
        ran_max={s for s in needed_max if ev.memo[s].invoked},
        ran_min={s for s in needed_min if ev.memo[s].invoked},
        outcomes=dict(ev.memo),
    )


# Running on the embedded runtime -----------------------------------------------------------------


@dataclass
class Run:
    result: FlowResult
    events: list[Event]
    runtime: EmbeddedRuntime
    journal: MemoryJournal
    plugin: PropPlugin


async def run_embedded(doc: dict[str, JSON], input: JSON, run_id: str = RUN_ID) -> Run:
    """Run ``doc`` on a fresh embedded runtime over a MemoryJournal."""
    flow = parse_flow(doc)
    journal, plugin = MemoryJournal(), PropPlugin()
    runtime = EmbeddedRuntime(CONFIG, journal, MemoryBlobStore(), plugins={"test": plugin})
    async with runtime:
        await runtime.submit(flow, input, run_id=run_id)
        result = await runtime.wait(run_id)
        events = await journal.read(run_id)
    return Run(result, events, runtime, journal, plugin)


def needed_steps(events: list[Event]) -> set[str]:
    return {s for e in events if isinstance(e, StepsNeeded) for s in e.step_ids}


def started_steps(events: list[Event]) -> set[str]:
    return {e.step_id for e in events if isinstance(e, StepStarted)}


def same_result(a: FlowResult, b: FlowResult) -> bool:
    """Equal outcomes: the same result value (strictly), or failures with the same code.

    The message of a failure names the step that failed first, which is a race when several
    needed steps fail, so it is not compared."""
    if a.ok != b.ok:
        return False
    if a.ok:
        return canonical(a.result) == canonical(b.result)
    assert a.error is not None and b.error is not None
    return a.error.code == b.error.code


def check_against_reference(ref: Reference, result: FlowResult, events: list[Event]) -> None:
    """The engine's result and laziness agree with the reference."""
    needed, started = needed_steps(events), started_steps(events)
    if result.ok:
        assert not ref.must_fail, f"run succeeded but the reference fails: {result}"
        assert canonical(result.result) == canonical(ref.value), (result.result, ref.value)
        assert ref.needed_min <= needed <= ref.needed_max, (needed, ref.needed_min,
                                                            ref.needed_max)
        assert ref.ran_min <= started <= ref.ran_max, (started, ref.ran_min, ref.ran_max)
    else:
        assert ref.may_fail, f"run failed but the reference succeeds with {ref.value!r}: {result}"
        assert result.error is not None and result.error.code == FAILED_CODE, result
        assert needed <= ref.needed_max, (needed, ref.needed_max)
        assert started <= ref.ran_max, (started, ref.ran_max)
    if ref.exact and result.ok:
        assert needed == ref.needed_max
        assert started == ref.ran_max
        attempts: dict[str, int] = {}
        for e in events:
            if isinstance(e, StepStarted):
                attempts[e.step_id] = attempts.get(e.step_id, 0) + 1
        assert attempts == {s: ref.outcomes[s].attempts for s in ref.ran_max}


def check_journal_shape(events: list[Event], run_id: str = RUN_ID) -> None:
    """seq contiguous from 0; each task id completes or fails at most once, after it started;
    each step completes at most once."""
    assert [e.seq for e in events] == list(range(len(events)))
    assert all(e.run_id == run_id for e in events)
    started: dict[str, str] = {}
    completed_tasks: set[str] = set()
    failed_tasks: set[str] = set()
    completed_steps: set[str] = set()
    for e in events:
        if isinstance(e, StepStarted):
            assert e.task_id not in started, f"task {e.task_id} started twice"
            started[e.task_id] = e.step_id
        elif isinstance(e, StepCompleted):
            assert started.get(e.task_id) == e.step_id, f"{e} has no StepStarted before it"
            assert e.task_id not in completed_tasks, f"task {e.task_id} completed twice"
            assert e.step_id not in completed_steps, f"step {e.step_id} completed twice"
            # A useDefault completion follows the failure of the same task; a component's
            # own completion is the task's only result.
            assert (e.task_id in failed_tasks) == e.from_default, e
            completed_tasks.add(e.task_id)
            completed_steps.add(e.step_id)
        elif isinstance(e, StepFailed):
            assert started.get(e.task_id) == e.step_id, f"{e} has no StepStarted before it"
            assert e.task_id not in failed_tasks, f"task {e.task_id} failed twice"
            assert e.task_id not in completed_tasks, f"task {e.task_id} failed after completing"
            failed_tasks.add(e.task_id)

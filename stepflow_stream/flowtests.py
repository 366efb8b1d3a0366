"""``stepflow-stream test``: the ``test.cases`` inside flow files, run and compared.

A case passes when every key of the expected FlowResult is present and equal in the actual
one (extra actual keys are fine), arrays have equal length and equal items, and a failure
matches on ``outcome`` and ``error.code``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from stepflow_stream.config import Config, default_config, find_config_file, load_config
from stepflow_stream.config.loader import parse_config_document
from stepflow_stream.core.events import ErrorInfo, FlowResult
from stepflow_stream.core.flow import Flow, TestCase, is_flow_document, parse_flow
from stepflow_stream.core.jsonvalue import JSON
from stepflow_stream.core.source import parse_document
from stepflow_stream.errors import ErrorCode, FlowError, InputError, UserInputError
from stepflow_stream.journal.memory import MemoryBlobStore, MemoryJournal
from stepflow_stream.runtime.embedded import EmbeddedOptions, EmbeddedRuntime

_FLOW_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True, slots=True)
class CaseOutcome:
    """One case's verdict; ``problem`` says what differed (empty when it passed)."""

    flow: str
    case: str
    passed: bool
    problem: str = ""


def find_flow_files(paths: list[Path]) -> Iterator[Path]:
    """Candidate files under ``paths`` (files as given; directories searched recursively)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in _FLOW_SUFFIXES
                              and p.is_file())
        else:
            yield path


def matches(expected: JSON, actual: JSON, where: str = "$") -> str:
    """Empty when ``actual`` matches ``expected``; else the first difference."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{where}: expected an object, got {actual!r}"
        for key, value in expected.items():
            if key not in actual:
                return f"{where}.{key}: missing"
            problem = matches(value, actual[key], f"{where}.{key}")
            if problem:
                return problem
        return ""
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return f"{where}: expected {expected!r}, got {actual!r}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            problem = matches(e, a, f"{where}[{i}]")
            if problem:
                return problem
        return ""
    if expected != actual or (type(expected) is bool and type(actual) is not bool):
        return f"{where}: expected {expected!r}, got {actual!r}"
    return ""


def result_matches(expected: JSON, actual: FlowResult) -> str:
    """Compare an expected FlowResult document with an actual result."""
    if isinstance(expected, dict) and expected.get("outcome") == "failed":
        if actual.ok:
            return f"expected a failure, got success with {actual.result!r}"
        code = (expected.get("error") or {}).get("code")
        assert actual.error is not None
        if code is not None and code != actual.error.code:
            return f"expected error code {code}, got {actual.error.code}: {actual.error.message}"
        return ""
    return matches(expected, actual.to_json())


def config_for_cases(flow: Flow, flow_path: Path) -> Config:
    """The config a flow's cases run with: ``test.config``, else ``test.configFile``, else the
    nearest ``stepflow-config.yml``, else the default."""
    test = flow.test
    if test is not None and test.config is not None:
        return parse_config_document(test.config, f"{flow_path} (test.config)", os.environ)
    if test is not None and test.config_file is not None:
        return load_config(flow_path.parent / test.config_file, os.environ)
    found = find_config_file(flow_path, flow_path.parent)
    return load_config(found, os.environ) if found else default_config()


async def run_flow_file(path: Path) -> list[CaseOutcome] | None:
    """Run the cases of one file; None when the file is not a flow."""
    try:
        document = parse_document(path.read_text(encoding="utf-8"), str(path), FlowError)
    except (OSError, UnicodeDecodeError) as exc:
        return [CaseOutcome(str(path), "(load)", False, f"cannot read: {exc}")]
    except UserInputError as exc:
        if path.suffix == ".json" or path.name.startswith("stepflow-config"):
            return None
        return [CaseOutcome(str(path), "(load)", False, str(exc))]
    if not is_flow_document(document):
        return None
    try:
        flow = parse_flow(document, str(path))
        if flow.test is None or not flow.test.cases:
            return []
        config = config_for_cases(flow, path)
        runtime = EmbeddedRuntime(config, MemoryJournal(), MemoryBlobStore(),
                                  EmbeddedOptions(base_dir=path.parent))
        runtime.check_flow(flow)
    except UserInputError as exc:
        return [CaseOutcome(str(path), "(load)", False, str(exc))]
    outcomes = []
    async with runtime:
        for case in flow.test.cases:
            outcomes.append(await _run_case(runtime, flow, path, case))
    return outcomes


async def _run_case(runtime: EmbeddedRuntime, flow: Flow, path: Path,
                    case: TestCase) -> CaseOutcome:
    try:
        _, result = await runtime.run(flow, case.input, case.variables)
    except InputError as exc:
        result = FlowResult(error=ErrorInfo(ErrorCode.INVALID_INPUT, str(exc)))
    problem = result_matches(case.output, result)
    return CaseOutcome(str(path), case.name, not problem, problem)


async def run_tests(paths: list[Path], report: Callable[[CaseOutcome], None]) -> tuple[int, int]:
    """Run every case under ``paths``; returns (passed, failed)."""
    passed = failed = 0
    for path in find_flow_files(paths):
        if not path.exists():
            outcome = CaseOutcome(str(path), "(load)", False, "file not found")
            report(outcome)
            failed += 1
            continue
        for outcome in await run_flow_file(path) or []:
            report(outcome)
            passed += outcome.passed
            failed += not outcome.passed
    return passed, failed


__all__ = [
    "CaseOutcome",
    "config_for_cases",
    "find_flow_files",
    "matches",
    "result_matches",
    "run_flow_file",
    "run_tests",
]

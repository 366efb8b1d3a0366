"""``replay --verify`` on the golden run, ``replay --step`` fed by stdin, ``fork`` counting the
component calls of a real component server, and ``runs diff``: the real command, as a
subprocess, on the embedded runtime."""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cli_support import CLI, Result, assert_bad_input

HERE = Path(__file__).resolve().parent
GOLDEN = HERE.parent / "golden"
GOLDEN_RUN = "golden-orders-1"
GOLDEN_EVENTS = 19

TAGS_FLOW = """\
schema: https://stepflow.org/schemas/v1/flow.json
name: tags
description: b reads a, c reads b; d reads only the input.
steps:
  - {id: a, component: /py/tag, input: {step: a, text: {$input: word}}}
  - {id: b, component: /py/tag, input: {step: b, text: {$step: a, path: text}}}
  - {id: c, component: /py/tag, input: {step: c, text: {$step: b, path: text}}}
  - {id: d, component: /py/tag, input: {step: d, text: {$input: word}}}
output: {a: {$step: a}, c: {$step: c}, d: {$step: d}}
"""
ECHO_FLOW = """\
schema: https://stepflow.org/schemas/v1/flow.json
name: echo
steps:
  - {id: first, component: /builtin/sleep, input: {duration_ms: 0, passthrough: {$input: x}}}
  - {id: second, component: /builtin/sleep, input: {duration_ms: 0, passthrough: {$step: first}}}
output: {$step: second}
"""


def _config() -> str:
    server = {"type": "stepflow", "command": sys.executable,
              "args": ["-m", "stepflow_stream", "serve-components", "replay_components:server",
                       "--port", "0", "--log-level", "warning"]}
    return yaml.safe_dump({
        "plugins": {"builtin": {"type": "builtin"}, "py": server},
        "routes": {"/py/{*component}": [{"plugin": "py"}],
                   "/builtin/{*component}": [{"plugin": "builtin"}]},
    })


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    (tmp_path / "tags.yaml").write_text(TAGS_FLOW)
    (tmp_path / "echo.yaml").write_text(ECHO_FLOW)
    (tmp_path / "stepflow-config.yml").write_text(_config())
    (tmp_path / "builtin.yml").write_text(yaml.safe_dump({
        "plugins": {"builtin": {"type": "builtin"}},
        "routes": {"/builtin/{*component}": [{"plugin": "builtin"}]}}))
    shutil.copy(HERE / "replay_components.py", tmp_path)
    return CLI(tmp_path)


def _run_id(result: Result) -> str:
    match = re.match(r"run id: (\S+)", result.stderr)
    assert match is not None and result.code == 0, str(result)
    return match.group(1)


def _calls(cli: CLI) -> dict[str, int]:
    return dict(collections.Counter((cli.cwd / "calls.log").read_text().split()))


# replay --verify on the golden run ---------------------------------------------------------


def test_the_golden_run_verifies(cli: CLI) -> None:
    result = cli.ok("replay", GOLDEN_RUN, "--journal", GOLDEN / "orders.journal.jsonl",
                    "--verify", "--config", GOLDEN / "stepflow-config.yml")
    assert "MISMATCH" not in result.stdout
    assert result.stdout.splitlines()[-1] == "verify: ok, the journal matches the flow"
    assert "5 step inputs evaluated again; the journal folds to a completed run (stored " \
        "result)" in result.stdout


def test_an_edited_flow_fails_verify_naming_the_step(cli: CLI) -> None:
    flow = (GOLDEN / "orders.yaml").read_text()
    assert flow.count('path: "$.tags[0]"') == 1
    (cli.cwd / "edited.yaml").write_text(flow.replace('path: "$.tags[0]"', 'path: "$.tags[1]"'))
    result = cli("replay", GOLDEN_RUN, "--journal", GOLDEN / "orders.journal.jsonl",
                 "--verify", "--flow", "edited.yaml")
    assert result.code == 1, str(result)
    mismatches = [line for line in result.stdout.splitlines() if line.startswith("MISMATCH")]
    assert mismatches == ["MISMATCH step 'label' field 'input.passthrough.first_tag': "
                          'recorded "x", evaluated now "y"'], str(result)
    assert result.stdout.splitlines()[-1] == "verify: 1 mismatches"


# replay --step -----------------------------------------------------------------------------


def _walk(cli: CLI, stdin: str) -> str:
    process = cli.popen("replay", GOLDEN_RUN, "--journal", GOLDEN / "orders.journal.jsonl",
                        "--step", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE)
    out, err = process.communicate(stdin, timeout=30)
    assert process.returncode == 0 and err == "", err
    return out


def test_step_walks_one_event_per_line_and_quits(cli: CLI) -> None:
    out = _walk(cli, "\n\nq\n")
    shown = re.findall(r"^\[(\d+)\] (\w+)", out, re.MULTILINE)
    assert shown == [("0", "RunCreated"), ("1", "StepsNeeded"), ("2", "StepStarted")]
    assert f"stopped after seq 2 ({GOLDEN_EVENTS - 3} more events)" in out
    # What each event changed, under it.
    assert '    status: "pending" -> "running"' in out
    assert '    steps.lookup: (none) -> {"status":"blocked","attempt":0}' in out
    assert '    steps.lookup.status: "blocked" -> "running"' in out
    assert "run golden-orders-1: running" in out  # the state where the walk stopped


def test_step_continues_to_the_end_on_c_and_shows_outputs(cli: CLI) -> None:
    out = _walk(cli, "\nc\n")
    shown = [int(seq) for seq in re.findall(r"^\[(\d+)\]", out, re.MULTILINE)]
    assert shown == list(range(GOLDEN_EVENTS))
    assert "stopped" not in out
    assert '    steps.flaky.attempt: 1 -> 2' in out
    assert '    steps.label.output: (none) -> {"name":"one","first_tag":"x"}' in out
    assert '    status: "running" -> "completed"' in out
    assert f"state after seq {GOLDEN_EVENTS - 1}:" in out


def test_step_stops_at_the_end_of_stdin(cli: CLI) -> None:
    out = _walk(cli, "\n")
    assert re.findall(r"^\[(\d+)\]", out, re.MULTILINE) == ["0", "1"]
    assert "stopped after seq 1" in out


# fork ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Forked:
    parent: str
    fork: str
    result: Result


def _fork(cli: CLI, *args: str) -> Forked:
    parent = _run_id(cli("run", "tags.yaml", "--input", '{"word": "hi"}'))
    assert _calls(cli) == {"a": 1, "b": 1, "c": 1, "d": 1}
    result = cli("fork", parent, *args)
    return Forked(parent, _run_id(result), result)


def test_a_fork_runs_again_only_the_step_and_what_reads_it(cli: CLI) -> None:
    forked = _fork(cli, "--from-step", "b")
    assert _calls(cli) == {"a": 1, "b": 2, "c": 2, "d": 1}
    assert forked.result.json == {"outcome": "success", "result": {
        "a": {"text": "hia", "call": 1},     # reused: the parent's recorded output
        "c": {"text": "hiabc", "call": 2},   # run again
        "d": {"text": "hid", "call": 1},     # reused
    }}
    assert "reused 2 steps; running again: b, c" in forked.result.stderr

    show = cli.ok("runs", "show", forked.fork, "--json").json
    assert (show["parentRunId"], show["forkedFromStep"]) == (forked.parent, "b")
    assert {step: entry["reusedFrom"] for step, entry in show["steps"].items()} == {
        "a": forked.parent, "d": forked.parent, "b": None, "c": None}
    listed = {run["runId"]: run for run in cli.ok("runs", "list", "--json").json_lines}
    assert listed[forked.fork]["parentRunId"] == forked.parent

    events = cli.ok("replay", forked.fork, "--json").json["events"]
    assert sorted(e["step_id"] for e in events if e["type"] == "StepStarted") == ["b", "c"]
    timeline = cli.ok("replay", forked.fork).stdout
    assert timeline.count(f"reused from run {forked.parent}") == 4  # 2 events, 2 state rows
    assert f"fork of  {forked.parent} from step b" in timeline
    assert cli.ok("replay", forked.fork, "--verify").stdout.endswith("verify: ok, the journal "
                                                                     "matches the flow\n")

    diff = cli("runs", "diff", forked.parent, forked.fork)
    assert diff.code == 1, str(diff)
    assert sorted(diff.stdout.splitlines()[1:]) == [
        "  result.result.c.call: 1 -> 2",
        "  steps.b.output.call: 1 -> 2",
        "  steps.c.output.call: 1 -> 2",
    ]


def test_forks_with_another_input_or_flow_run_again_what_changes(cli: CLI) -> None:
    forked = _fork(cli, "--from-step", "c", "--override", '{"word": "yo"}')
    # The input is replaced: a, b and d read it (b through a), so only c's place is kept.
    assert _calls(cli) == {"a": 2, "b": 2, "c": 2, "d": 2}
    assert forked.result.json["result"] == {"a": {"text": "yoa", "call": 2},
                                            "c": {"text": "yoabc", "call": 2},
                                            "d": {"text": "yod", "call": 2}}
    show = cli.ok("runs", "show", forked.fork, "--json").json
    assert show["input"] == {"word": "yo"}
    assert all(entry["reusedFrom"] is None for entry in show["steps"].values())

    (cli.cwd / "tags2.yaml").write_text(TAGS_FLOW.replace("{step: c, text:", "{step: c2, text:"))
    edited = cli("fork", forked.parent, "--from-step", "d", "--flow", "tags2.yaml")
    # c's input changed with the flow: it runs again though it does not read d.
    assert _calls(cli) == {"a": 2, "b": 2, "c": 2, "c2": 1, "d": 3}
    assert edited.json["result"] == {"a": {"text": "hia", "call": 1},
                                     "c": {"text": "hiabc2", "call": 1},
                                     "d": {"text": "hid", "call": 3}}
    assert "reused 2 steps; running again: c, d" in edited.stderr


def _echo(cli: CLI, input: str) -> str:
    """A run of echo.yaml, whose config starts no component server."""
    return _run_id(cli("run", "echo.yaml", "--input", input, "--config", "builtin.yml"))


def test_fork_from_an_unknown_step_is_bad_input(cli: CLI) -> None:
    parent = _echo(cli, '{"x": 1}')
    assert_bad_input(cli("fork", parent, "--from-step", "ghost", "--config", "builtin.yml"),
                     "--from-step", "'ghost'", "first, second")


# runs diff -------------------------------------------------------------------------------


def test_runs_diff_of_equal_and_different_runs(cli: CLI) -> None:
    one = _echo(cli, '{"x": [1, "a"]}')
    same = _echo(cli, '{"x": [1, "a"]}')
    other = _echo(cli, '{"x": [1, "b"]}')
    result = cli.ok("runs", "diff", one, same)
    assert result.stdout.startswith(f"runs {one} and {same} are the same")

    result = cli("runs", "diff", one, other)
    assert result.code == 1, str(result)
    assert result.stdout.splitlines() == [
        f"runs {one} (a) and {other} (b) differ in 6 places:",
        '  input.x[1]: "a" -> "b"',
        '  result.result[1]: "a" -> "b"',
        '  steps.second.input.passthrough[1]: "a" -> "b"',
        '  steps.second.output[1]: "a" -> "b"',
        '  steps.first.input.passthrough[1]: "a" -> "b"',
        '  steps.first.output[1]: "a" -> "b"',
    ]
    as_json = cli("runs", "diff", one, other, "--json")
    assert as_json.code == 1
    assert as_json.json["same"] is False
    assert as_json.json["differences"][0] == {"path": "input.x[1]", "a": "a", "b": "b"}

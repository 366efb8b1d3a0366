"""``run`` (one input, a file input, variables, a batch), ``validate`` and ``test``."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cli_support import CLI

RUN_ID_LINE = re.compile(r"run id: ([0-9A-Za-z_-]+)")


def run_id_of(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    match = RUN_ID_LINE.fullmatch(lines[0])
    assert match is not None, stderr
    return match.group(1)


def test_run_prints_the_flow_result_and_the_run_id(cli: CLI) -> None:
    result = cli("run", "greet.yaml", "--input", '{"name": "Zoë", "times": 2}',
                 "--var", "tone=Be brief.", "--var", "limit=3")
    assert result.code == 0, str(result)
    assert len(result.stdout.splitlines()) == 1
    assert result.json == {
        "outcome": "success",
        "result": {
            "messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "Zoë"}],
            "times": 2,
            "limit": 3,
        },
    }
    run_id = run_id_of(result.stderr)
    shown = cli.ok("runs", "show", run_id, "--json").json
    assert shown["runId"] == run_id
    assert shown["status"] == "completed"
    assert shown["variables"] == {"tone": "Be brief.", "limit": 3}
    assert shown["result"] == result.json


def test_var_values_are_json_when_they_parse_else_strings(cli: CLI) -> None:
    result = cli("run", "greet.yaml", "--input", '{"name": "x"}',
                 "--var", 'tone={"not": "a string"}', "--var", "limit=[1, 2]",
                 "--var", "limit=007")
    # tone is a JSON object, which create_messages rejects: the step fails, exit 1.
    assert result.code == 1, str(result)
    assert result.json["outcome"] == "failed"
    run_id = run_id_of(result.stderr)
    shown = cli.ok("runs", "show", run_id, "--json").json
    assert shown["variables"] == {"tone": {"not": "a string"}, "limit": "007"}


def test_input_file_in_yaml(cli: CLI, workdir: Path) -> None:
    (workdir / "input.yaml").write_text(
        "# the input, as YAML\nname: Zoë — ünïcode ✓\ntimes: 4\n", encoding="utf-8")
    result = cli("run", "greet.yaml", "--input-file", "input.yaml", "--var", "tone=formal")
    assert result.code == 0, str(result)
    assert result.json["result"] == {
        "messages": [{"role": "system", "content": "formal"},
                     {"role": "user", "content": "Zoë — ünïcode ✓"}],
        "times": 4,
        "limit": 10,
    }
    run_id_of(result.stderr)


def test_a_failing_step_exits_1_with_a_failed_flow_result(cli: CLI) -> None:
    result = cli("run", "sleep.yaml", "--input", '{"ms": -5, "v": 1}')
    assert result.code == 1, str(result)
    flow_result = result.json
    assert flow_result["outcome"] == "failed"
    assert flow_result["error"]["code"] == "INVALID_INPUT"
    assert "'nap'" in flow_result["error"]["message"]
    assert "duration_ms" in flow_result["error"]["message"]
    assert "result" not in flow_result
    run_id = run_id_of(result.stderr)
    listed = cli.ok("runs", "list", "--status", "failed", "--json").json_lines
    assert [(r["runId"], r["result"]) for r in listed] == [(run_id, flow_result)]


BATCH = [
    {"ms": 150, "v": "slow"},
    {"ms": 0, "v": 1},
    {"ms": 60, "v": [1, 2]},
    {"ms": -1, "v": "bad"},
    {"ms": 0, "v": {"ü": "ß"}},
    {"ms": 30, "v": None},
    {"ms": 0, "v": True},
]


def test_batch_writes_one_result_per_line_in_input_order(cli: CLI, workdir: Path) -> None:
    (workdir / "in.jsonl").write_text(
        "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in BATCH), encoding="utf-8")
    result = cli("run", "sleep.yaml", "--inputs", "in.jsonl", "--output", "out.jsonl",
                 "--max-concurrency", "4")
    assert result.code == 1, str(result)  # one item failed
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[-1] == "6 succeeded, 1 failed", str(result)
    batch_id = next(line.removeprefix("batch id: ") for line in lines
                    if line.startswith("batch id: "))
    out = [json.loads(line) for line in
           (workdir / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    expected = [{"outcome": "success", "result": {"value": item["v"]}} for item in BATCH]
    assert [r["outcome"] for r in out] == ["success"] * 3 + ["failed"] + ["success"] * 3
    assert out[3]["error"]["code"] == "INVALID_INPUT"
    assert out[:3] + out[4:] == expected[:3] + expected[4:]

    runs = cli.ok("runs", "list", "--json").json_lines
    assert len(runs) == len(BATCH)
    assert {r["batchId"] for r in runs} == {batch_id}
    by_index = {r["batchIndex"]: r for r in runs}
    assert sorted(by_index) == list(range(len(BATCH)))
    assert [by_index[i]["result"] for i in range(len(BATCH))] == out
    assert [by_index[i]["status"] for i in range(len(BATCH))] == \
        ["completed"] * 3 + ["failed"] + ["completed"] * 3


def test_batch_without_output_prints_results_on_stdout(cli: CLI, workdir: Path) -> None:
    (workdir / "in.jsonl").write_text(
        '{"ms": 40, "v": "a"}\n\n{"ms": 0, "v": "b"}\n{"ms": 10, "v": "c"}\n', encoding="utf-8")
    result = cli("run", "sleep.yaml", "--inputs", "in.jsonl", "--max-concurrency", "2")
    assert result.code == 0, str(result)
    assert result.json_lines == [{"outcome": "success", "result": {"value": v}}
                                 for v in "abc"]
    assert result.stderr.splitlines()[-1] == "3 succeeded, 0 failed"


def test_validate_ok(cli: CLI) -> None:
    assert cli.ok("validate", "greet.yaml").stdout == "ok: greet.yaml: 1 steps, 0 test cases\n"
    assert cli.ok("validate", "cases/all_pass.yaml").stdout == \
        "ok: cases/all_pass.yaml: 1 steps, 2 test cases\n"


def test_test_command_reports_each_case_and_fails_when_one_fails(cli: CLI) -> None:
    result = cli("test", "cases")
    assert result.code == 1, str(result)
    lines = result.stdout.splitlines()
    assert lines[-1] == "3 passed, 1 failed"
    assert len(lines) == 5
    passed = sorted(line for line in lines[:-1] if line.startswith("PASS "))
    failed = [line for line in lines[:-1] if not line.startswith("PASS ")]
    assert passed == ["PASS cases/all_pass.yaml :: number",
                      "PASS cases/all_pass.yaml :: text",
                      "PASS cases/mixed.yaml :: right"]
    assert len(failed) == 1
    assert failed[0].startswith("FAIL cases/mixed.yaml :: wrong: ")
    assert "'bye'" in failed[0] and "'hi'" in failed[0]
    assert "notes.yaml" not in result.stdout + result.stderr

    passing = cli("test", "cases/all_pass.yaml")
    assert passing.code == 0, str(passing)
    assert passing.stdout.splitlines()[-1] == "2 passed, 0 failed"


def test_validate_uses_the_config_a_flows_tests_name(tmp_path: Path) -> None:
    """A flow routed only by its inline test.config validates without --config, and fails
    against an explicit config that cannot route it."""
    flow = tmp_path / "inline.yaml"
    flow.write_text(
        "steps:\n"
        "  - {id: a, component: /mine/echo, input: {x: 1}}\n"
        "output: {$step: a}\n"
        "test:\n"
        "  config:\n"
        "    plugins: {m: {type: mock, components: {/echo: {behaviors: {}}}}}\n"
        "    routes: {'/mine/{*component}': [{plugin: m}]}\n"
        "  cases: []\n",
        encoding="utf-8",
    )
    cli = CLI(tmp_path)
    assert cli("validate", flow).code == 0
    (tmp_path / "stepflow-config.yml").write_text(
        "plugins: {builtin: {type: builtin}}\nroutes: {'/builtin/{*component}': "
        "[{plugin: builtin}]}\n", encoding="utf-8")
    refused = cli("validate", flow, "--config", tmp_path / "stepflow-config.yml")
    assert refused.code == 2 and "/mine/echo" in refused.stderr

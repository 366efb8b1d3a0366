"""Bad input: exit code 2 and one ``error:`` line that says where and what, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import CLI, assert_bad_input

GOOD_INPUT = '{"name": "Zoë"}'
EMBEDDED_CONFIG = """\
plugins: {builtin: {type: builtin}}
routes: {"/builtin/{*c}": [{plugin: builtin}]}
"""
CLUSTER_CONFIG = """\
plugins: {builtin: {type: builtin}}
routes: {"/builtin/{*c}": [{plugin: builtin}]}
runtime: {type: kafka, bootstrapServers: "127.0.0.1:1", partitions: 2}
stateStore: {type: postgres, databaseUrl: "postgresql://nobody@127.0.0.1:1/none"}
"""

# (id, files to write first, arguments, fragments the one error line must hold)
CASES: list[tuple[str, dict[str, str], list[str], list[str]]] = [
    ("malformed-yaml", {}, ["run", "malformed.yaml"],
     ["malformed.yaml:4", "YAML", "expected"]),
    ("unknown-step", {}, ["run", "unknown_step.yaml"],
     ["unknown_step.yaml", "'writer'", "'ghost'", "unknown step"]),
    ("cycle", {}, ["run", "cycle.yaml"],
     ["cycle.yaml", "'left'", "'right'", "cycle"]),
    ("cycle-validate", {}, ["validate", "cycle.yaml"],
     ["cycle.yaml", "'left'", "'right'", "cycle"]),
    ("unroutable", {}, ["run", "unroutable.yaml"],
     ["unroutable.yaml", "'udf'", "/python/udf", "route"]),
    ("unknown-builtin", {}, ["run", "unknown_builtin.yaml"],
     ["unknown_builtin.yaml", "'mystery'", "/builtin/nope", "unknown component"]),
    ("unknown-builtin-validate", {}, ["validate", "unknown_builtin.yaml"],
     ["unknown_builtin.yaml", "'mystery'", "/builtin/nope"]),
    ("input-wrong-type", {}, ["run", "greet.yaml", "--var", "tone=x", "--input", '{"name": 3}'],
     ["greet.yaml", "input.name", "string"]),
    ("input-below-minimum", {},
     ["run", "greet.yaml", "--var", "tone=x", "--input", '{"name": "a", "times": 0}'],
     ["greet.yaml", "input.times", "minimum"]),
    ("input-missing-field", {}, ["run", "greet.yaml", "--var", "tone=x", "--input", "{}"],
     ["greet.yaml", "'name'", "required"]),
    ("input-file-schema", {"in.yaml": "name: [not, a, string]\n"},
     ["run", "greet.yaml", "--var", "tone=x", "--input-file", "in.yaml"],
     ["input.name", "string"]),
    ("missing-variable", {}, ["run", "greet.yaml", "--input", GOOD_INPUT],
     ["greet.yaml", "'tone'", "required", "--var tone="]),
    ("missing-flow", {}, ["run", "no_such_flow.yaml", "--input", "{}"],
     ["no_such_flow.yaml", "not found"]),
    ("missing-flow-validate", {}, ["validate", "no_such_flow.yaml"],
     ["no_such_flow.yaml", "not found"]),
    ("missing-config", {}, ["run", "greet.yaml", "--config", "nope.yml", "--var", "tone=x"],
     ["nope.yml", "not found"]),
    ("bad-input-json", {}, ["run", "greet.yaml", "--var", "tone=x", "--input", '{"name": '],
     ["--input", "not valid JSON"]),
    ("malformed-input-file", {"in.yaml": "name: ok\ntimes: [1\nother: 2\n"},
     ["run", "greet.yaml", "--var", "tone=x", "--input-file", "in.yaml"],
     ["in.yaml:3", "YAML"]),
    ("missing-input-file", {}, ["run", "greet.yaml", "--var", "tone=x", "--input-file", "x.yaml"],
     ["x.yaml", "not found"]),
    ("bad-var", {}, ["run", "greet.yaml", "--input", GOOD_INPUT, "--var", "tone"],
     ["--var", "NAME=VALUE", "'tone'"]),
    ("bad-var-empty-name", {}, ["run", "greet.yaml", "--input", GOOD_INPUT, "--var", "=x"],
     ["--var", "NAME=VALUE"]),
    ("bad-jsonl-line", {"in.jsonl": '{"name": "a"}\n\n{"name": \n{"name": "c"}\n'},
     ["run", "greet.yaml", "--var", "tone=x", "--inputs", "in.jsonl"],
     ["in.jsonl:3", "not valid JSON"]),
    ("missing-jsonl", {}, ["run", "greet.yaml", "--var", "tone=x", "--inputs", "none.jsonl"],
     ["none.jsonl", "not found"]),
    ("unknown-run-show", {}, ["runs", "show", "no-such-run"], ["'no-such-run'", "no run"]),
    ("unknown-run-show-json", {}, ["runs", "show", "no-such-run", "--json"], ["'no-such-run'"]),
    ("unknown-run-replay", {}, ["replay", "no-such-run"], ["'no-such-run'", "no run"]),
    ("agents-without-cluster", {"embedded.yml": EMBEDDED_CONFIG},
     ["agents", "--config", "embedded.yml"],
     ["embedded.yml", "runtime", "type: kafka"]),
    ("agents-unknown-class", {"cluster.yml": CLUSTER_CONFIG},
     ["agents", "--config", "cluster.yml", "--classes", "gpu"],
     ["cluster.yml", "--classes", "'gpu'", "plugins: builtin"]),
    ("agents-bad-partitions",
     {"cluster.yml": CLUSTER_CONFIG.replace("partitions: 2", "partitions: -1")},
     ["agents", "--config", "cluster.yml"],
     ["cluster.yml", "runtime.partitions", "positive integer", "-1"]),
    ("submit-without-cluster", {"embedded.yml": EMBEDDED_CONFIG},
     ["submit", "greet.yaml", "--config", "embedded.yml", "--var", "tone=x", "--input", GOOD_INPUT],
     ["embedded.yml", "runtime"]),
    ("submit-input-schema", {"cluster.yml": CLUSTER_CONFIG},
     ["submit", "greet.yaml", "--config", "cluster.yml", "--var", "tone=x",
      "--input", '{"name": 3}'],
     ["greet.yaml", "input.name", "string"]),
]


@pytest.mark.parametrize(("files", "args", "fragments"),
                         [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_bad_input_is_one_line_naming_where_and_what(
    cli: CLI, workdir: Path, files: dict[str, str], args: list[str], fragments: list[str]
) -> None:
    for name, text in files.items():
        (workdir / name).write_text(text, encoding="utf-8")
    assert_bad_input(cli(*args), *fragments)


def test_cycle_names_only_the_steps_in_the_cycle(cli: CLI) -> None:
    line = assert_bad_input(cli("run", "cycle.yaml"), "cycle")
    assert "'start'" not in line


def test_bad_input_starts_no_run(cli: CLI, workdir: Path) -> None:
    """A run rejected before it starts leaves nothing in the journal."""
    assert_bad_input(cli("run", "greet.yaml", "--input", GOOD_INPUT), "'tone'")
    listed = cli("runs", "list", "--json")
    assert (listed.code, listed.stdout) == (0, ""), str(listed)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        pytest.param(["run", "greet.yaml", "--max-concurrency", "lots"],
                     ["--max-concurrency", "'lots'"], id="not-an-int"),
        pytest.param(["replay"], ["run_id"], id="missing-argument"),
    ],
)
def test_argument_errors_are_one_line_too(cli: CLI, args: list[str],
                                          fragments: list[str]) -> None:
    """main._Parser promises "exits with 2 and one line, like every other bad input"."""
    assert_bad_input(cli(*args), *fragments)


@pytest.mark.parametrize(("config", "fragments"), [
    pytest.param(CLUSTER_CONFIG, ["cannot reach Kafka at 127.0.0.1:1",
                                  "runtime.bootstrapServers"], id="kafka"),
])
def test_an_unreachable_cluster_is_one_line_and_exit_1(
    cli: CLI, workdir: Path, config: str, fragments: list[str]
) -> None:
    (workdir / "cluster.yml").write_text(config, encoding="utf-8")
    result = cli("submit", "greet.yaml", "--config", "cluster.yml", "--var", "tone=x",
                 "--input", GOOD_INPUT)
    assert result.code == 1, str(result)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), str(result)
    assert all(fragment in lines[0] for fragment in fragments), str(result)


# replay, fork and runs diff ----------------------------------------------------------------

GOLDEN_DUMP = str(Path(__file__).resolve().parents[1] / "golden" / "orders.journal.jsonl")

# (id, arguments, fragments the one error line must hold); run in a directory without a journal
REPLAY_CASES: list[tuple[str, list[str], list[str]]] = [
    ("replay-to-out-of-range", ["replay", "golden-orders-1", "--journal", GOLDEN_DUMP,
                                "--to", "99"], ["--to", "between 0 and 18", "99"]),
    ("replay-to-negative", ["replay", "golden-orders-1", "--journal", GOLDEN_DUMP,
                            "--to", "-1"], ["--to", "-1"]),
    ("replay-to-not-a-number", ["replay", "golden-orders-1", "--to", "last"],
     ["--to", "'last'"]),
    ("replay-unknown-run-in-dump", ["replay", "no-such-run", "--journal", GOLDEN_DUMP],
     ["'no-such-run'", "no run"]),
    ("replay-verify-unknown-run", ["replay", "no-such-run", "--verify"],
     ["'no-such-run'", "no journal"]),
    ("replay-flow-without-verify", ["replay", "golden-orders-1", "--journal", GOLDEN_DUMP,
                                    "--flow", "chain.yaml"], ["--flow", "--verify"]),
    ("replay-verify-missing-flow", ["replay", "golden-orders-1", "--journal", GOLDEN_DUMP,
                                    "--verify", "--flow", "nope.yaml"], ["nope.yaml", "not found"]),
    ("replay-missing-dump", ["replay", "r", "--journal", "none.jsonl"],
     ["none.jsonl", "not found"]),
    ("fork-unknown-run", ["fork", "no-such-run", "--from-step", "first"], ["'no-such-run'"]),
    ("fork-unknown-run-in-journal", ["fork", "no-such-run", "--from-step", "first",
                                     "--journal", "memory"], ["'no-such-run'"]),
    ("fork-bad-override", ["fork", "r", "--from-step", "first", "--override", '{"i": '],
     ["--override", "not valid JSON"]),
    ("fork-from-a-dump", ["fork", "golden-orders-1", "--journal", GOLDEN_DUMP,
                          "--from-step", "label"], ["orders.journal.jsonl", "read-only"]),
    ("diff-unknown-run", ["runs", "diff", "golden-orders-1", "nope", "--journal", GOLDEN_DUMP],
     ["'nope'", "no run"]),
]


@pytest.mark.parametrize(("args", "fragments"),
                         [pytest.param(*case[1:], id=case[0]) for case in REPLAY_CASES])
def test_replay_fork_and_diff_bad_input_is_one_line(cli: CLI, args: list[str],
                                                     fragments: list[str]) -> None:
    assert_bad_input(cli(*args), *fragments)

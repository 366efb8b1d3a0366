"""``replay``, ``replay --verify``/``--step``, ``fork`` and ``runs diff`` on the distributed
runtime (``--config`` with a postgres stateStore): the journal is read from the PostgreSQL
projection that real agents (direct driver) wrote, and a fork is submitted to them."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_support import CLI, Result, assert_bad_input

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distributed"))
from agents_cluster import ORCHESTRATOR, AgentsCluster

DIAMOND = """\
schema: https://stepflow.org/schemas/v1/flow.json
name: diamond
steps:
  - {id: top, component: /builtin/sleep,
     input: {duration_ms: 0, passthrough: {letters: {$input: letters}}}}
  - {id: left, component: /builtin/sleep,
     input: {duration_ms: 0, passthrough: {$step: top, path: "$.letters[0]"}}}
  - {id: right, component: /builtin/sleep,
     input: {duration_ms: 0, passthrough: {$step: top, path: "$.letters[1]"}}}
  - {id: bottom, component: /builtin/sleep,
     input: {duration_ms: 0, passthrough: {l: {$step: left}, r: {$step: right}}}}
output: {$step: bottom}
"""
PLUGINS = {"plugins": {"builtin": {"type": "builtin"}},
           "routes": {"/builtin/{*component}": [{"plugin": "builtin"}]}}


@dataclass(frozen=True)
class Cluster:
    cli: CLI
    config: Path
    run_id: str


def _run_id(result: Result) -> str:
    match = re.match(r"run id: (\S+)", result.stderr)
    assert match is not None and result.code == 0, str(result)
    return match.group(1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str,
            postgres_url: str) -> Iterator[Cluster]:
    agents = AgentsCluster(tmp_path_factory.mktemp("replay-cluster"), kafka_bootstrap,
                           postgres_url, plugins_document=PLUGINS, driver="direct")
    try:
        agents.start_all([ORCHESTRATOR, "worker:builtin"])
        (agents.root / "diamond.yaml").write_text(DIAMOND)
        cli = CLI(agents.root)
        submitted = cli("submit", "diamond.yaml", "--config", agents.config_path, "--wait",
                        "--input", '{"letters": ["a", "b"]}', timeout=60)
        assert submitted.json == {"outcome": "success", "result": {"l": "a", "r": "b"}}
        yield Cluster(cli, agents.config_path, _run_id(submitted))
    finally:
        agents.stop()
        agents.delete_topics()


def test_replay_reads_the_postgres_journal(cluster: Cluster) -> None:
    out = cluster.cli.ok("replay", cluster.run_id, "--config", cluster.config).stdout
    lines = out.splitlines()
    assert lines[0] == f"timeline of run {cluster.run_id} (13 events)"
    assert f"run {cluster.run_id}: completed" in lines
    partial = cluster.cli.ok("replay", cluster.run_id, "--config", cluster.config, "--to", "4",
                             "--json").json
    assert [e["type"] for e in partial["events"]][-1] == "StepStarted"
    assert partial["state"]["status"] == "running"


def test_verify_and_step_on_the_cluster(cluster: Cluster) -> None:
    verified = cluster.cli.ok("replay", cluster.run_id, "--config", cluster.config, "--verify")
    assert verified.stdout.endswith("verify: ok, the journal matches the flow\n")
    (cluster.cli.cwd / "edited.yaml").write_text(DIAMOND.replace("$.letters[1]", "$.letters[0]"))
    edited = cluster.cli("replay", cluster.run_id, "--config", cluster.config, "--verify",
                         "--flow", "edited.yaml")
    assert edited.code == 1, str(edited)
    assert "MISMATCH step 'right' field 'input.passthrough': recorded \"b\", evaluated now " \
        '"a"' in edited.stdout
    process = cluster.cli.popen("replay", cluster.run_id, "--config", cluster.config, "--step",
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, _ = process.communicate("\nq\n", timeout=30)
    assert process.returncode == 0
    assert re.findall(r"^\[(\d+)\]", out, re.MULTILINE) == ["0", "1"]


def test_a_fork_on_the_cluster_reuses_the_steps_before_its_step(cluster: Cluster) -> None:
    forked = cluster.cli("fork", cluster.run_id, "--from-step", "right", "--config",
                         cluster.config, "--timeout", "60", timeout=90)
    fork_id = _run_id(forked)
    assert forked.json == {"outcome": "success", "result": {"l": "a", "r": "b"}}
    replay = cluster.cli.ok("replay", fork_id, "--config", cluster.config, "--json").json
    started = sorted(e["step_id"] for e in replay["events"] if e["type"] == "StepStarted")
    assert started == ["bottom", "right"]  # top and left were reused, not called
    state = replay["state"]
    assert (state["parentRunId"], state["forkedFromStep"]) == (cluster.run_id, "right")
    assert {s: e["reusedFrom"] for s, e in state["steps"].items()} == {
        "top": cluster.run_id, "left": cluster.run_id, "right": None, "bottom": None}
    same = cluster.cli.ok("runs", "diff", cluster.run_id, fork_id, "--config", cluster.config)
    assert same.stdout.startswith(f"runs {cluster.run_id} and {fork_id} are the same")


def test_bad_input_on_the_cluster(cluster: Cluster) -> None:
    assert_bad_input(cluster.cli("replay", cluster.run_id, "--config", cluster.config,
                                 "--journal", "x.db"), "--journal", "two journals")
    assert_bad_input(cluster.cli("fork", cluster.run_id, "--from-step", "ghost", "--config",
                                 cluster.config), "--from-step", "'ghost'")

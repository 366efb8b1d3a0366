"""``runs list``, ``runs show`` and ``replay`` over a journal holding a completed and a failed
run (made once for the module)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from typing import Any

import pytest
from cli_support import CLI, assert_bad_input, copy_data

CHAIN_TYPES = ["RunCreated", "StepsNeeded", "StepsNeeded", "StepStarted", "StepCompleted",
               "StepStarted", "StepCompleted", "RunCompleted"]


@dataclass(frozen=True)
class Journal:
    cli: CLI
    chain_id: str
    failed_id: str


def _run(cli: CLI, *args: str) -> str:
    result = cli("run", *args)
    match = re.fullmatch(r"run id: (\S+)\n", result.stderr)
    assert match is not None, str(result)
    return match.group(1)


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Journal:
    cli = CLI(copy_data(tmp_path_factory.mktemp("inspect")))
    chain_id = _run(cli, "chain.yaml", "--input", '{"i": "ü-1"}')
    failed_id = _run(cli, "sleep.yaml", "--input", '{"ms": -1, "v": 0}')
    return Journal(cli, chain_id, failed_id)


def test_runs_list_table(journal: Journal) -> None:
    lines = journal.cli.ok("runs", "list").stdout.splitlines()
    assert lines[0].split() == ["RUN", "ID", "STATUS", "CREATED", "DURATION", "FLOW"]
    assert len(lines) == 3
    assert lines[1].split()[:2] == [journal.failed_id, "failed"]  # newest first
    assert lines[2].split()[:2] == [journal.chain_id, "completed"]
    assert re.search(r"\b\d+ ms\b", lines[2])


def test_runs_list_json_and_status_filter(journal: Journal) -> None:
    runs = journal.cli.ok("runs", "list", "--json").json_lines
    assert [(r["runId"], r["status"]) for r in runs] == [
        (journal.failed_id, "failed"), (journal.chain_id, "completed")]
    chain = runs[1]
    assert chain["result"] == {"outcome": "success", "result": {"i": "ü-1"}}
    assert chain["finishedAt"] >= chain["createdAt"]
    assert len(chain["flowId"]) == 64
    assert runs[0]["result"]["error"]["code"] == "INVALID_INPUT"
    completed = journal.cli.ok("runs", "list", "--status", "completed", "--json").json_lines
    assert [r["runId"] for r in completed] == [journal.chain_id]
    paged = journal.cli.ok("runs", "list", "--json", "--limit", "1", "--offset", "1").json_lines
    assert [r["runId"] for r in paged] == [journal.chain_id]


def test_runs_show_text(journal: Journal) -> None:
    out = journal.cli.ok("runs", "show", journal.chain_id).stdout
    assert out.splitlines()[0] == f"run {journal.chain_id}: completed"
    steps = {line.split()[0]: line.split()[1:3] for line in out.splitlines()
             if line.strip().split()[:1] in (["first"], ["second"])}
    assert steps == {"first": ["completed", "1"], "second": ["completed", "1"]}
    assert '"result": {"i": "ü-1"}' in out

    failed = journal.cli.ok("runs", "show", journal.failed_id).stdout
    assert failed.splitlines()[0] == f"run {journal.failed_id}: failed"
    nap = next(line for line in failed.splitlines() if line.split()[:1] == ["nap"])
    assert nap.split()[1] == "failed"
    assert "INVALID_INPUT: " in nap


def test_runs_show_json(journal: Journal) -> None:
    state = journal.cli.ok("runs", "show", journal.chain_id, "--json").json
    assert state["runId"] == journal.chain_id
    assert state["status"] == "completed"
    assert state["input"] == {"i": "ü-1"}
    assert state["result"] == {"outcome": "success", "result": {"i": "ü-1"}}
    assert state["nextSeq"] == len(CHAIN_TYPES)
    first, second = state["steps"]["first"], state["steps"]["second"]
    assert (first["status"], first["attempt"], first["output"]) == ("completed", 1, "ü-1")
    assert (second["status"], second["input"]) == ("completed",
                                                  {"duration_ms": 150, "passthrough": "ü-1"})
    assert first["finishedAt"] - first["startedAt"] >= 150
    assert second["startedAt"] >= first["finishedAt"]

    failed = journal.cli.ok("runs", "show", journal.failed_id, "--json").json
    assert failed["status"] == "failed"
    assert failed["steps"]["nap"]["status"] == "failed"
    assert failed["steps"]["nap"]["error"]["code"] == "INVALID_INPUT"


def _replay_json(journal: Journal, *args: str) -> Any:
    return journal.cli.ok("replay", journal.chain_id, "--json", *args).json


def test_replay_prints_the_timeline_and_the_state(journal: Journal) -> None:
    out = journal.cli.ok("replay", journal.chain_id).stdout
    lines = out.splitlines()
    assert lines[0] == f"timeline of run {journal.chain_id} ({len(CHAIN_TYPES)} events)"
    timeline = lines[1:1 + len(CHAIN_TYPES)]
    parsed = [re.match(r"\s*(\d+)\s+\+\s*(\d+) ms\s+(\w+) ", line) for line in timeline]
    assert all(parsed), timeline
    assert [int(m.group(1)) for m in parsed if m] == list(range(len(CHAIN_TYPES)))
    assert [m.group(3) for m in parsed if m] == CHAIN_TYPES
    offsets = [int(m.group(2)) for m in parsed if m]
    assert offsets == sorted(offsets) and offsets[-1] >= 300  # two 150 ms sleeps
    assert f"state after seq {len(CHAIN_TYPES) - 1}:" in lines
    assert f"run {journal.chain_id}: completed" in lines


def test_replay_json_state_equals_show(journal: Journal) -> None:
    replay = _replay_json(journal)
    assert [e["type"] for e in replay["events"]] == CHAIN_TYPES
    assert [e["seq"] for e in replay["events"]] == list(range(len(CHAIN_TYPES)))
    assert {e["run_id"] for e in replay["events"]} == {journal.chain_id}
    assert replay["events"][0]["input"] == {"i": "ü-1"}
    assert replay["events"][-1]["result"] == {"i": "ü-1"}
    assert replay["state"] == journal.cli.ok("runs", "show", journal.chain_id, "--json").json


def test_replay_to_a_seq_shows_the_state_at_that_point(journal: Journal) -> None:
    events = _replay_json(journal)["events"]
    second_started = next(e["seq"] for e in events
                          if e["type"] == "StepStarted" and e["step_id"] == "second")

    partial = _replay_json(journal, "--to", str(second_started))
    assert len(partial["events"]) == second_started + 1
    assert partial["events"] == events[: second_started + 1]
    state = partial["state"]
    assert (state["status"], state["result"], state["finishedAt"]) == ("running", None, None)
    assert state["steps"]["first"]["status"] == "completed"
    assert state["steps"]["second"]["status"] == "running"
    assert state["nextSeq"] == second_started + 1

    text = journal.cli.ok("replay", journal.chain_id, "--to", str(second_started)).stdout
    assert f"({second_started + 1} events)" in text.splitlines()[0]
    assert f"state after seq {second_started}:" in text
    assert f"run {journal.chain_id}: running" in text
    second = next(line for line in text.splitlines() if line.split()[:1] == ["second"])
    assert second.split()[1] == "running"

    first_only = _replay_json(journal, "--to", "0")
    assert [e["type"] for e in first_only["events"]] == ["RunCreated"]
    assert first_only["state"]["steps"] == {}


def test_replay_to_out_of_range(journal: Journal) -> None:
    assert_bad_input(journal.cli("replay", journal.chain_id, "--to", "99"),
                     "--to", str(len(CHAIN_TYPES) - 1))


def test_runs_list_into_a_closed_pipe_is_quiet(journal: Journal) -> None:
    """``stepflow-stream runs list | head -1``: the reader going away is not a crash."""
    process = journal.cli.popen("runs", "list", stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    stderr = process.stderr.read()
    process.wait(timeout=30)
    assert "Traceback" not in stderr, stderr
    assert "Error" not in stderr, stderr

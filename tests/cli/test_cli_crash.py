"""A batch killed with SIGKILL mid-way: the journal stays readable, the runs that finished are
complete and replay to their stored results, and the ones in flight show as running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from cli_support import CLI

ITEMS = 60  # 200 to 400 ms each, 4 at a time: about 4.5 s, far longer than the test waits
MIN_COMPLETED = 3


def _runs(cli: CLI, *args: str) -> list[Any]:
    return cli.ok("runs", "list", "--json", "--limit", "1000", *args).json_lines


def test_kill_9_during_a_batch_leaves_a_readable_journal(cli: CLI, workdir: Path) -> None:
    (workdir / "in.jsonl").write_text(
        # Durations differ, so the items in flight never all finish at the same moment.
        "".join(json.dumps({"i": i, "ms": 100 + i * 67 % 200}) + "\n" for i in range(ITEMS)),
        encoding="utf-8")
    batch = cli.popen("run", "staggered.yaml", "--inputs", "in.jsonl", "--output", "out.jsonl",
                      "--max-concurrency", "4",
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        completed_before: list[Any] = []
        while len(completed_before) < MIN_COMPLETED:
            assert time.monotonic() < deadline, "no run completed within 20 s"
            assert batch.poll() is None, f"the batch ended before the kill: {batch.returncode}"
            if (workdir / ".stepflow" / "journal.db").exists():
                completed_before = [r for r in _runs(cli) if r["status"] == "completed"]
            else:
                time.sleep(0.1)
        assert batch.poll() is None, "the batch ended before the kill"
        os.kill(batch.pid, signal.SIGKILL)
        assert batch.wait(timeout=10) == -signal.SIGKILL
    finally:
        if batch.poll() is None:
            batch.kill()
            batch.wait()
        assert batch.stderr is not None
        batch.stderr.close()

    runs = _runs(cli)
    by_status: dict[str, list[Any]] = {}
    for run in runs:
        by_status.setdefault(run["status"], []).append(run)
    assert set(by_status) == {"completed", "running"}, by_status.keys()
    completed, running = by_status["completed"], by_status["running"]
    assert {r["runId"] for r in completed_before} <= {r["runId"] for r in completed}
    assert 1 <= len(running) <= 4  # the ones in flight, at most --max-concurrency
    assert len(completed) < ITEMS

    # Items are submitted in input order, and the journal appends in call order: what is
    # durable is a prefix of the batch, all under one batch id.
    assert len({r["batchId"] for r in runs}) == 1
    assert sorted(r["batchIndex"] for r in runs) == list(range(len(runs)))
    for run in completed:
        assert run["result"] == {"outcome": "success", "result": {"i": run["batchIndex"]}}
        assert run["finishedAt"] is not None
    for run in running:
        assert (run["result"], run["finishedAt"]) == (None, None)

    # The table and the status filter show the unfinished ones.
    table = cli.ok("runs", "list", "--limit", "1000").stdout.splitlines()
    running_rows = {line.split()[0] for line in table[1:] if line.split()[1] == "running"}
    assert running_rows == {r["runId"] for r in running}
    assert {r["runId"] for r in _runs(cli, "--status", "running")} == running_rows

    # Every completed run replays to the result the index stored.
    for run in completed:
        replay = cli.ok("replay", run["runId"], "--json").json
        assert replay["state"]["status"] == "completed"
        assert replay["state"]["result"] == run["result"]
        assert replay["events"][-1]["type"] == "RunCompleted"
        assert [e["seq"] for e in replay["events"]] == list(range(len(replay["events"])))

    # An unfinished run (the oldest: it has got furthest) replays to a running state.
    unfinished = min(running, key=lambda r: r["batchIndex"])
    replay = cli.ok("replay", unfinished["runId"], "--json").json
    state = replay["state"]
    assert (state["status"], state["result"]) == ("running", None)
    assert state["input"]["i"] == unfinished["batchIndex"]
    assert "running" in {step["status"] for step in state["steps"].values()}
    assert cli.ok("runs", "show", unfinished["runId"], "--json").json == state


def test_killed_batch_resumes_to_exactly_one_result_per_item(cli: CLI, workdir: Path) -> None:
    """kill -9 mid-batch, then `resume` (runs in flight) and the same batch again by its id
    (items never started): every item ends with its result, each step's output applied once."""
    (workdir / "in.jsonl").write_text(
        "".join(json.dumps({"i": i, "ms": 50 + i * 37 % 120}) + "\n" for i in range(ITEMS)),
        encoding="utf-8")
    batch = cli.popen("run", "staggered.yaml", "--inputs", "in.jsonl", "--output", "out.jsonl",
                      "--max-concurrency", "8",
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert batch.stderr is not None
    first_line = batch.stderr.readline()
    batch_id = first_line.split()[2]
    deadline = time.monotonic() + 20
    while True:
        assert time.monotonic() < deadline, "no run completed within 20 s"
        if (workdir / ".stepflow" / "journal.db").exists() and any(
                r["status"] == "completed" for r in _runs(cli)):
            break
        time.sleep(0.05)
    os.kill(batch.pid, signal.SIGKILL)
    batch.wait(timeout=10)
    batch.stderr.close()
    running = [r["runId"] for r in _runs(cli, "--status", "running")]
    assert running, "the kill should leave runs in flight"

    resumed = cli("resume")
    assert resumed.code == 0, str(resumed)
    assert {line["runId"] for line in resumed.json_lines} == set(running)

    again = cli("run", "staggered.yaml", "--inputs", "in.jsonl", "--output", "out.jsonl",
                "--max-concurrency", "8", "--batch-id", batch_id)
    assert again.code == 0, str(again)
    results = [json.loads(line) for line in (workdir / "out.jsonl").read_text().splitlines()]
    assert results == [{"outcome": "success", "result": {"i": i}} for i in range(ITEMS)]

    runs = _runs(cli)
    assert len(runs) == ITEMS and {r["status"] for r in runs} == {"completed"}
    for run_id in [*running, f"{batch_id}/{ITEMS - 1}"]:
        events = cli.ok("replay", run_id, "--json").json["events"]
        completed_steps = [e["step_id"] for e in events if e["type"] == "StepCompleted"]
        assert sorted(completed_steps) == ["first", "second"], events

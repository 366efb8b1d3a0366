"""``stepflow-stream batch submit`` on a real cluster, as a real process: results in input
order with a progress line, failures in their place, and ``kill -9`` in the middle followed by
the same batch again with ``--batch-id``: one result per item, in order, and no item run
twice (each run's journal holds each step once)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import asyncpg
import pytest
from agents_cluster import ORCHESTRATOR, AgentsCluster

from stepflow_stream.config import load_config
from stepflow_stream.distributed.options import distributed_options

ITEMS = 300
PLUGINS = {
    "plugins": {"builtin": {"type": "builtin"}},
    "routes": {"/builtin/{*component}": [{"plugin": "builtin"}]},
}
FLOW = """\
schema: https://stepflow.org/schemas/v1/flow.json
name: two_sleeps
inputSchema:
  type: object
  properties: {x: {type: integer}, ms: {type: integer}}
  required: [x, ms]
steps:
  - {id: a, component: /builtin/sleep,
     input: {duration_ms: {$input: ms}, passthrough: {$input: x}}}
  - {id: b, component: /builtin/sleep, input: {duration_ms: 50, passthrough: {$step: a}}}
output: {$step: b}
"""


@pytest.fixture
def cluster(cluster_factory) -> AgentsCluster:  # type: ignore[no-untyped-def]
    cluster: AgentsCluster = cluster_factory(plugins_document=PLUGINS, driver="direct")
    cluster.start_all([ORCHESTRATOR, "worker:builtin"])
    return cluster


def _command(cluster: AgentsCluster, root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "stepflow_stream", "batch", "submit", str(root / "flow.yaml"),
            "--config", str(cluster.config_path), "--inputs", str(root / "in.jsonl"),
            "--output", str(root / "out.jsonl"), "--max-concurrency", "32", *extra]


def _lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


async def _journal_counts(cluster: AgentsCluster, batch_id: str) -> dict[str, Counter[str]]:
    """Per run of the batch: how many times each event type (and step completion) is in its
    journal, read from the PostgreSQL projection."""
    options = distributed_options(load_config(cluster.config_path, {}))
    connection = await asyncpg.connect(options.database_url)
    try:
        rows = await connection.fetch(
            "SELECT run_id, type FROM journal WHERE run_id LIKE $1", f"{batch_id}-%")
    finally:
        await connection.close()
    counts: dict[str, Counter[str]] = {}
    for row in rows:
        counts.setdefault(row["run_id"], Counter())[row["type"]] += 1
    return counts


async def test_a_batch_killed_midway_resumes_by_its_id(cluster: AgentsCluster,
                                                       tmp_path: Path) -> None:
    (tmp_path / "flow.yaml").write_text(FLOW)
    (tmp_path / "in.jsonl").write_text("".join(
        json.dumps({"x": i, "ms": 100}) + "\n" for i in range(ITEMS)))
    first = subprocess.Popen(_command(cluster, tmp_path), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(_lines(tmp_path / "out.jsonl")) < ITEMS // 10:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the batch made no progress"
        await asyncio.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    _, first_err = first.communicate()
    written_at_kill = len(_lines(tmp_path / "out.jsonl"))
    assert written_at_kill < ITEMS * 0.9, "the batch ended before the kill: nothing was tested"
    batch_id = first_err.split("batch id: ", 1)[1].split()[0]

    second = subprocess.run(_command(cluster, tmp_path, "--batch-id", batch_id),
                            capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr
    already = int(second.stderr.split(" of 300 items already done")[0].rsplit("\n", 1)[-1])
    assert already >= written_at_kill
    results = _lines(tmp_path / "out.jsonl")
    assert results == [{"outcome": "success", "result": i} for i in range(ITEMS)]
    assert f"{ITEMS}/{ITEMS} done, 0 failed" in second.stderr
    assert f"{ITEMS} succeeded, 0 failed" in second.stderr
    counts = await _journal_counts(cluster, batch_id)
    assert len(counts) == ITEMS
    for run_id, count in counts.items():
        assert count["RunCreated"] == 1 and count["RunCompleted"] == 1, (run_id, count)
        assert count["StepCompleted"] == 2, (run_id, count)


async def test_a_failed_item_is_reported_in_its_place(cluster: AgentsCluster,
                                                      tmp_path: Path) -> None:
    (tmp_path / "flow.yaml").write_text(FLOW)
    items = [{"x": 0, "ms": 1}, {"x": 1, "ms": -5}, {"x": 2, "ms": 1}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    done = subprocess.run(_command(cluster, tmp_path), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1, done.stderr
    results = _lines(tmp_path / "out.jsonl")
    assert [r["outcome"] for r in results] == ["success", "failed", "success"]
    assert [results[0]["result"], results[2]["result"]] == [0, 2]
    assert "2 succeeded, 1 failed" in done.stderr


def test_an_item_failing_the_input_schema_is_refused_before_anything_runs(
    cluster: AgentsCluster, tmp_path: Path
) -> None:
    (tmp_path / "flow.yaml").write_text(FLOW)
    (tmp_path / "in.jsonl").write_text('{"x": 1, "ms": 1}\n{"x": "two", "ms": 1}\n')
    done = subprocess.run(_command(cluster, tmp_path), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "in.jsonl: item 2" in line and "input.x" in line, line
    assert not (tmp_path / "out.jsonl").exists()

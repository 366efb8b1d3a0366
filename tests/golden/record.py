"""Records the golden run: one real run of ``orders.yaml`` on the embedded runtime (with the
config beside it), dumped with its flow to ``orders.journal.jsonl``.

Run it again only on purpose (``.venv/bin/python tests/golden/record.py``): the dump is what
the replay tests hold today's code to, a journal written by an earlier version included.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from stepflow_stream.cli.loading import load_flow
from stepflow_stream.config import load_config
from stepflow_stream.journal.dump import write_dump
from stepflow_stream.journal.memory import MemoryBlobStore, MemoryJournal
from stepflow_stream.runtime.embedded import EmbeddedOptions, EmbeddedRuntime

HERE = Path(__file__).resolve().parent
FLOW = HERE / "orders.yaml"
DUMP = HERE / "orders.journal.jsonl"
RUN_ID = "golden-orders-1"
INPUT = {"customer": 1, "items": [{"sku": "a-1", "n": 2}, {"sku": "b-7", "n": 1}],
         "quiet": True}


async def record() -> None:
    flow = load_flow(FLOW)
    config = load_config(HERE / "stepflow-config.yml", os.environ)
    journal, blobs = MemoryJournal(), MemoryBlobStore()
    async with EmbeddedRuntime(config, journal, blobs, EmbeddedOptions(base_dir=HERE)) as runtime:
        await runtime.submit(flow, INPUT, run_id=RUN_ID)
        result = await runtime.wait(RUN_ID)
    assert result.ok, result
    write_dump(DUMP, await journal.read(RUN_ID), [(flow.document, "flow")])
    print(f"{DUMP}: {len(await journal.read(RUN_ID))} events of run {RUN_ID}")


if __name__ == "__main__":
    asyncio.run(record())

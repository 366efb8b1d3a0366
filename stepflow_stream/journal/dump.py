"""A journal dump: runs' events and the blobs they name (their flows), in one JSON Lines file.

Each line is one object: ``{"event": BASE64, "runId", "seq", "type"}`` holds an event as the
journal encodes it (Avro, :mod:`stepflow_stream.journal.codec`), so a dump pins the wire format
as well as the run; ``{"blob": ID, "blobType", "data"}`` holds a blob. ``replay --journal
FILE.jsonl`` reads a dump as a journal (tests keep golden runs this way).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from pathlib import Path

from stepflow_stream.core.events import Event
from stepflow_stream.core.jsonvalue import JSON, compact_json, content_id
from stepflow_stream.errors import InputError, JournalError, Location
from stepflow_stream.journal.codec import decode_event, encode_event
from stepflow_stream.journal.memory import MemoryBlobStore, MemoryJournal

__all__ = ["DUMP_SUFFIX", "load_dump", "write_dump"]

DUMP_SUFFIX = ".jsonl"


def write_dump(path: Path, events: Sequence[Event], blobs: Sequence[tuple[JSON, str]]) -> None:
    """Write ``events`` and ``blobs`` (``(data, blob type)`` pairs) to ``path``."""
    lines = [
        compact_json({"blob": content_id(data), "blobType": blob_type, "data": data})
        for data, blob_type in blobs
    ]
    lines += [
        compact_json({"runId": event.run_id, "seq": event.seq, "type": type(event).__name__,
                      "event": base64.b64encode(encode_event(event)).decode("ascii")})
        for event in events
    ]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


async def load_dump(path: Path) -> tuple[MemoryJournal, MemoryBlobStore]:
    """A journal and a blob store holding what the dump at ``path`` holds."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("journal dump not found", Location(str(path))) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the journal dump: {exc}", Location(str(path))) from None
    journal, blobs = MemoryJournal(), MemoryBlobStore()
    events: list[Event] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = Location(str(path), number)
        try:
            record = json.loads(line)
            if "blob" in record:
                stored = await blobs.put(record["data"], str(record.get("blobType", "data")))
                if stored != record["blob"]:
                    raise InputError(f"blob {record['blob']} holds data of id {stored}", where)
            else:
                events.append(decode_event(base64.b64decode(record["event"], validate=True)))
        except (ValueError, KeyError, TypeError, JournalError) as exc:
            raise InputError(f"not a journal dump line: {exc}", where) from None
    await journal.append(events)
    return journal, blobs

"""Reading what the commands need from disk: flows, configs, inputs, journals."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

from stepflow_stream.config import Config, default_config, find_config_file, load_config
from stepflow_stream.core.flow import Flow, parse_flow_text
from stepflow_stream.core.jsonvalue import JSON, JSONObject, plain
from stepflow_stream.core.source import parse_document
from stepflow_stream.errors import ConfigError, FlowError, InputError, Location, RunNotFoundError
from stepflow_stream.journal.base import BlobStore, Journal
from stepflow_stream.journal.memory import MemoryBlobStore, MemoryJournal
from stepflow_stream.journal.sqlite import SQLiteBlobStore, SQLiteDatabase, SQLiteJournal

DEFAULT_JOURNAL = Path(".stepflow/journal.db")


def read_text(path: Path, error: type[FlowError | ConfigError | InputError]) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error("file not found", Location(str(path))) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read the file: {exc}", Location(str(path))) from None


def load_flow(path: Path) -> Flow:
    return parse_flow_text(read_text(path, FlowError), str(path))


def load_run_config(config_path: Path | None, flow_path: Path | None) -> Config:
    """``--config``, else the nearest ``stepflow-config.yml``, else the default config."""
    path = config_path or find_config_file(flow_path, Path.cwd())
    if path is None:
        return default_config()
    if not path.exists():
        raise ConfigError("config file not found", Location(str(path)))
    return load_config(path, os.environ)


def parse_input_json(text: str, what: str) -> JSON:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} is not valid JSON: {exc.msg} (line {exc.lineno}, column "
                         f"{exc.colno})") from None


def load_input_file(path: Path) -> JSON:
    """A JSON or YAML file holding one input."""
    return plain(parse_document(read_text(path, InputError), str(path), InputError))


def read_jsonl(path: Path) -> Iterator[JSON]:
    """Every line of a JSON Lines file; blank lines are ignored, a bad line names its number."""
    for number, line in enumerate(read_text(path, InputError).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON: {exc.msg} (column {exc.colno})",
                             Location(str(path), number)) from None


def parse_variables(pairs: list[str], variables_json: str | None) -> JSONObject:
    """``--var k=v`` (v parsed as JSON when it is JSON, else a string) and ``--variables-json``."""
    variables: JSONObject = {}
    if variables_json:
        loaded = parse_input_json(variables_json, "--variables-json")
        if not isinstance(loaded, dict):
            raise InputError("--variables-json must be a JSON object")
        variables.update(loaded)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InputError(f"--var takes NAME=VALUE, got {pair!r}")
        try:
            variables[name] = json.loads(value)
        except json.JSONDecodeError:
            variables[name] = value
    return variables


@asynccontextmanager
async def open_store(
    journal: str | None, *, must_exist: bool = False
) -> AsyncIterator[tuple[Journal, BlobStore]]:
    """The journal and blob store: ``memory``, or an SQLite file (default .stepflow/journal.db).

    ``must_exist`` is for commands that only read: they report a missing journal instead of
    creating an empty one."""
    if journal == "memory":
        yield MemoryJournal(), MemoryBlobStore()
        return
    path = Path(journal) if journal else DEFAULT_JOURNAL
    if must_exist and not path.exists():
        raise RunNotFoundError("no journal here: no run has been recorded yet",
                               Location(str(path)))
    database = SQLiteDatabase(path)
    sqlite_journal = SQLiteJournal(database)
    try:
        yield sqlite_journal, SQLiteBlobStore(database)
    finally:
        await sqlite_journal.close()
        database.close()

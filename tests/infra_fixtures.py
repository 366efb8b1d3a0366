"""Session fixtures for tests that need a real Kafka broker or PostgreSQL server, registered
for every test directory by ``tests/conftest.py``:

- ``kafka_bootstrap``: bootstrap servers, ``127.0.0.1:PORT``;
- ``postgres_url``: ``postgresql://stepflow:PASSWORD@127.0.0.1:PORT/stepflow``.

With ``STEPFLOW_KAFKA_BOOTSTRAP`` / ``STEPFLOW_POSTGRES_URL`` set (``eval "$(stepflow-stream
infra up)"``), they hand those out. Otherwise they start the local services in the checkout's
``.stepflow/infra`` once per session, and stop at the session's end what test sessions
started, so a CI run leaves nothing behind. A service that ``infra up`` started is left
running, and so is one that another test session still uses: each session holds a shared
lock on ``.stepflow/infra/.SERVICE-sessions``, and the one that leaves last stops the
service whose pid ``.SERVICE-started-by-tests`` holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stepflow_stream.infra import (
    ServiceStatus,
    ensure_kafka,
    ensure_postgres,
    kafka_status,
    postgres_status,
    stop_kafka,
    stop_postgres,
)

INFRA_DIR = Path(__file__).resolve().parents[1] / ".stepflow" / "infra"


def _service(env_name: str, service: str, probe: Callable[[Path], ServiceStatus],
             ensure: Callable[[Path], str], stop: Callable[[Path], bool]) -> Iterator[str]:
    given = os.environ.get(env_name)
    if given:
        yield given
        return
    INFRA_DIR.mkdir(parents=True, exist_ok=True)
    started_by_tests = INFRA_DIR / f".{service}-started-by-tests"
    with (INFRA_DIR / f".{service}-sessions").open("a") as sessions:
        fcntl.flock(sessions, fcntl.LOCK_SH)
        running_before = probe(INFRA_DIR).running
        value = ensure(INFRA_DIR)
        if not running_before:
            started_by_tests.write_text(f"{probe(INFRA_DIR).pid}\n")
        try:
            yield value
        finally:
            try:
                # Exclusive only when no other session holds its shared lock any more.
                fcntl.flock(sessions, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            else:
                # The pid tells a service a test session started from one started since by
                # `infra up`, which stays.
                if _read_pid(started_by_tests) == probe(INFRA_DIR).pid:
                    stop(INFRA_DIR)
                started_by_tests.unlink(missing_ok=True)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A real Kafka 4 broker (KRaft, one node; transactions work): its bootstrap servers."""
    yield from _service("STEPFLOW_KAFKA_BOOTSTRAP", "kafka", kafka_status, ensure_kafka, stop_kafka)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server: the URL of a database the test may create tables in."""
    yield from _service("STEPFLOW_POSTGRES_URL", "postgres", postgres_status, ensure_postgres,
                        stop_postgres)


async def delete_topics(bootstrap: str, prefix: str) -> None:
    """Delete the topics whose names start with ``prefix`` (a test's own): a broker that keeps
    every test's topics gets slower for the tests and benchmarks after them. Leftover topics
    only cost the broker some files, so a failed cleanup fails no test."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    with contextlib.suppress(Exception):
        await admin.start()
        try:
            ours = [t for t in await admin.list_topics() if t.startswith(prefix)]
            if ours:
                await admin.delete_topics(ours)
        finally:
            await admin.close()

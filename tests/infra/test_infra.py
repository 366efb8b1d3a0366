"""The local infrastructure, for real: a Kafka 4 broker and a PostgreSQL server.

The client tests use the session fixtures (``tests/infra_fixtures.py``); the command tests
start a second pair of services in a folder of their own, so they can stop them freely.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata

from stepflow_stream.infra import (
    InfraError,
    ensure_kafka,
    ensure_postgres,
    kafka_status,
    postgres_status,
    stop_postgres,
)

COMMAND = [sys.executable, "-m", "stepflow_stream.cli.main", "infra"]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def _create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, replication_factor=1)])
    finally:
        await admin.close()


async def _read(bootstrap: str, topic: str, count: int, *, isolation: str,
                group: str | None = None) -> list[bytes]:
    """Read a topic from the start until ``count`` records came, or 20 s passed."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                isolation_level=isolation)
    await consumer.start()
    values: list[bytes] = []
    try:
        for _ in range(40):
            batches = await consumer.getmany(timeout_ms=500)
            values += [record.value for records in batches.values() for record in records]
            if len(values) >= count:
                break
        # Anything after the expected records would show up now.
        batches = await consumer.getmany(timeout_ms=300)
        values += [record.value for records in batches.values() for record in records]
    finally:
        await consumer.stop()
    return values


async def test_kafka_round_trip_on_a_new_topic(kafka_bootstrap: str) -> None:
    topic = _name("round-trip")
    await _create_topic(kafka_bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for index in range(5):
            await producer.send_and_wait(topic, f"value-{index}".encode(), key=b"run-1")
    finally:
        await producer.stop()

    values = await _read(kafka_bootstrap, topic, 5, isolation="read_uncommitted",
                         group=_name("group"))
    assert values == [f"value-{index}".encode() for index in range(5)]


async def test_a_committed_transaction_is_read_and_an_aborted_one_is_not(
        kafka_bootstrap: str) -> None:
    topic = _name("transactions")
    await _create_topic(kafka_bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap,
                                transactional_id=_name("orchestrator"))
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed-1")
            await producer.send_and_wait(topic, b"committed-2")
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed-3")
    finally:
        await producer.stop()

    committed = await _read(kafka_bootstrap, topic, 3, isolation="read_committed")
    assert committed == [b"committed-1", b"committed-2", b"committed-3"]
    # The aborted record was written all the same: only read_committed hides it.
    everything = await _read(kafka_bootstrap, topic, 4, isolation="read_uncommitted")
    assert b"aborted" in everything


async def test_offsets_sent_with_a_transaction_are_committed_with_it(
        kafka_bootstrap: str) -> None:
    # What exactly-once processing does: the consumer's position commits with the output.
    source, output, group = _name("source"), _name("output"), _name("group")
    await _create_topic(kafka_bootstrap, source)
    await _create_topic(kafka_bootstrap, output)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap,
                                transactional_id=_name("worker"))
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(output, b"result")
            await producer.send_offsets_to_transaction(
                {TopicPartition(source, 0): OffsetAndMetadata(7, "")}, group)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        assert await consumer.committed(TopicPartition(source, 0)) == 7
    finally:
        await consumer.stop()


async def test_asyncpg_connects_and_runs_queries(postgres_url: str) -> None:
    connection = await asyncpg.connect(postgres_url)
    try:
        database, user = await connection.fetchrow("SELECT current_database(), current_user")
        assert (database, user) == ("stepflow", "stepflow")
        table = _name("runs").replace("-", "_")
        await connection.execute(f"CREATE TABLE {table} (run_id text PRIMARY KEY, seq int)")
        await connection.executemany(f"INSERT INTO {table} VALUES ($1, $2)",
                                     [("a", 1), ("b", 2)])
        assert await connection.fetchval(f"SELECT sum(seq) FROM {table}") == 3
        await connection.execute(f"DROP TABLE {table}")
    finally:
        await connection.close()


def _infra(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture
def infra_dir() -> Iterator[Path]:
    """A fresh infra folder that the ``postgres`` user can enter (pytest's own tmp folders
    are 0700); whatever runs from it is stopped afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="stepflow-infra-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        _infra("down", "--dir", str(folder))
        shutil.rmtree(folder, ignore_errors=True)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


async def test_infra_up_down_and_status_from_the_command_line(infra_dir: Path) -> None:
    where = ("--dir", str(infra_dir))
    assert _infra("status", *where).returncode == 3

    first = _infra("up", *where)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert len(lines) == 2, first.stdout
    assert re.fullmatch(r"STEPFLOW_KAFKA_BOOTSTRAP=127\.0\.0\.1:\d+", lines[0])
    assert re.fullmatch(
        r"STEPFLOW_POSTGRES_URL=postgresql://stepflow:[0-9a-f]+@127\.0\.0\.1:\d+/stepflow",
        lines[1])

    again = _infra("up", *where)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert "already running" in again.stderr

    # The services outlived the commands that started them, and answer.
    env = dict(line.split("=", 1) for line in lines)
    connection = await asyncpg.connect(env["STEPFLOW_POSTGRES_URL"])
    assert await connection.fetchval("SELECT 1") == 1
    await connection.close()
    await _create_topic(env["STEPFLOW_KAFKA_BOOTSTRAP"], _name("after-exit"))

    status = _infra("status", *where)
    assert status.returncode == 0, status.stdout
    assert re.search(r"^kafka: running, pid \d+", status.stdout, re.MULTILINE)
    assert env["STEPFLOW_POSTGRES_URL"] in status.stdout
    pids = [kafka_status(infra_dir).pid, postgres_status(infra_dir).pid]
    assert None not in pids

    assert _infra("down", "--only", "kafka", *where).returncode == 0
    assert _infra("status", *where).returncode == 3
    assert _infra("status", "--only", "postgres", *where).returncode == 0

    down = _infra("down", *where)
    assert down.returncode == 0, down.stderr
    status = _infra("status", *where)
    assert (status.returncode, status.stdout) == (3, "kafka: stopped\npostgres: stopped\n")
    assert all(_gone(pid) for pid in pids if pid is not None)


def test_the_environment_lines_work_with_eval(infra_dir: Path) -> None:
    script = (f'eval "$({" ".join(COMMAND)} up --only postgres --dir {infra_dir})"; '
              f'echo "url=$STEPFLOW_POSTGRES_URL"')
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"url=postgresql://stepflow:\w+@127\.0\.0\.1:\d+/stepflow\n",
                        done.stdout)


def test_down_with_nothing_running_is_fine(infra_dir: Path) -> None:
    done = _infra("down", "--dir", str(infra_dir))
    assert done.returncode == 0, done.stderr
    assert "kafka: not running" in done.stderr
    assert done.stdout == ""


def test_a_pid_file_naming_another_process_is_not_a_running_broker(infra_dir: Path) -> None:
    # After a reboot, the pid in kafka.pid may belong to anybody: here, this test's process.
    (infra_dir / "kafka").mkdir()
    (infra_dir / "kafka" / "kafka.pid").write_text(f"{os.getpid()}\n")
    assert not kafka_status(infra_dir).running
    assert _infra("status", "--only", "kafka", "--dir", str(infra_dir)).returncode == 3


def test_a_remembered_port_taken_by_another_program_is_named(infra_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (infra_dir / "postgres").mkdir()
        (infra_dir / "postgres" / "state.json").write_text(
            f'{{"port": {port}, "password": "0123abcd"}}')
        with pytest.raises(InfraError, match=f"port {port} .* in use by another program"):
            ensure_postgres(infra_dir)


def test_a_broker_that_dies_while_starting_reports_its_output(
        infra_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_HEAP_OPTS", "-Xmx1k")
    with pytest.raises(InfraError, match="Kafka exited with code") as raised:
        ensure_kafka(infra_dir)
    assert "heap" in str(raised.value).lower()
    assert not kafka_status(infra_dir).running


@pytest.mark.skipif(os.geteuid() != 0, reason="as root, PostgreSQL runs as the postgres user")
def test_a_folder_the_postgres_user_cannot_enter_keeps_the_server_files_elsewhere(
    tmp_path: Path,
) -> None:
    """A checkout under a 0700 folder (as mkdtemp makes, and as CI may clone into) still gets
    a server: its data, socket and log go to a folder of the temp dir the postgres user can
    enter, while the state stays in the infra folder."""
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    infra = closed / "infra"
    server_folders = Path(tempfile.gettempdir()).glob("stepflow-pg-*-server")
    before = set(server_folders)
    try:
        url = ensure_postgres(infra)
        assert url == postgres_status(infra).url and postgres_status(infra).running
        assert (infra / "postgres" / "state.json").is_file()
        assert not (infra / "postgres" / "data").exists()
    finally:
        stop_postgres(infra)
    assert not postgres_status(infra).running
    created = set(Path(tempfile.gettempdir()).glob("stepflow-pg-*-server")) - before
    assert len(created) == 1
    for folder in created:
        shutil.rmtree(folder)

"""A deployment of the distributed runtime for tests: real ``stepflow-stream agents``
processes (Faust apps) on the real Kafka broker and PostgreSQL server, with a topic prefix of
their own, so tests never see each other's runs.

Each role (the orchestrator, the worker of each component class) is its own process, so a
test can ``kill -9`` exactly one of them and start it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from infra_fixtures import delete_topics

ORCHESTRATOR = "orchestrator"
_READY = "[^Worker]: Ready"


@dataclass
class AgentProcess:
    role: str
    process: subprocess.Popen[bytes]
    log_path: Path
    started_at_line: int = 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class AgentsCluster:
    """Writes a config (``plugins``/``routes`` given, or those of a flow's tests) and runs
    agents for it."""

    root: Path
    kafka_bootstrap: str
    postgres_url: str
    plugins_document: dict[str, Any] | None = None
    plugins_from_flow: Path | None = None
    partitions: int = 2
    task_partitions: int = 2
    checkpoint_every: int = 1000
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    driver: str = "faust"
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}.")
    processes: dict[str, AgentProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        document = dict(self.plugins_document or {})
        runtime: dict[str, Any] = {
            "type": "kafka", "bootstrapServers": self.kafka_bootstrap,
            "topicPrefix": self.prefix, "partitions": self.partitions,
            "taskPartitions": self.task_partitions, "checkpointEvery": self.checkpoint_every,
            "sessionTimeoutSeconds": 6,
        }
        if self.workers:
            runtime["workers"] = self.workers
        document["runtime"] = runtime
        # One schema per deployment, as one topic prefix: deployments share the database but
        # not their runs, snapshots or checkpoints.
        schema = self.prefix.rstrip(".").replace("-", "_")
        self.database_url = f"{self.postgres_url}?search_path={schema}"
        document["stateStore"] = {"type": "postgres", "databaseUrl": self.database_url}
        self.config_path = self.root / "stepflow-config.yml"
        self.config_path.write_text(yaml.safe_dump(document, sort_keys=False))

    def command(self, role: str) -> list[str]:
        command = [sys.executable, "-m", "stepflow_stream", "agents", "--config",
                   str(self.config_path), "--data-dir", str(self.root / "faust"),
                   "--driver", self.driver]
        if self.plugins_from_flow is not None:
            command += ["--plugins-from-flow", str(self.plugins_from_flow)]
        if role == ORCHESTRATOR:
            return [*command, "--orchestrator-only"]
        return [*command, "--no-orchestrator", "--classes", role.split(":", 1)[1]]

    def start(self, role: str) -> AgentProcess:
        old = self.processes.get(role)
        log_path = self.root / f"{role.replace(':', '-')}.log"
        lines = len(old.log().splitlines()) if old is not None else 0
        log = log_path.open("ab")
        process = subprocess.Popen(self.command(role), stdout=log, stderr=subprocess.STDOUT,
                                   cwd=self.root, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        agent = self.processes[role] = AgentProcess(role, process, log_path, lines)
        return agent

    def start_all(self, roles: list[str], timeout_s: float = 60.0) -> None:
        for role in roles:
            self.start(role)
        for role in roles:
            self.wait_ready(role, timeout_s)

    def wait_ready(self, role: str, timeout_s: float = 60.0) -> None:
        agent = self.processes[role]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not agent.alive():
                raise AssertionError(f"agent {role} exited with {agent.process.returncode}:\n"
                                     f"{agent.log()[-3000:]}")
            if _READY in self.new_log(role):
                return
            time.sleep(0.1)
        raise AssertionError(f"agent {role} not ready after {timeout_s} s:\n{agent.log()[-3000:]}")

    def new_log(self, role: str) -> str:
        """The log of the role's current process only."""
        agent = self.processes[role]
        return "\n".join(agent.log().splitlines()[agent.started_at_line:])

    def assert_alive(self) -> None:
        """Fail at once, with its log, if an agent has died (rather than waiting for runs
        that can no longer end)."""
        for role, agent in self.processes.items():
            if not agent.alive():
                raise AssertionError(f"agent {role} exited with {agent.process.returncode}:\n"
                                     f"{agent.log()[-3000:]}")

    def kill(self, role: str) -> None:
        agent = self.processes[role]
        agent.process.send_signal(signal.SIGKILL)
        agent.process.wait()

    def catch_up_reports(self, role: str = ORCHESTRATOR) -> list[dict[str, Any]]:
        """The catch-up reports the role's current process logged."""
        return [json.loads(m) for m in re.findall(r"caught up (\{.*\})", self.new_log(role))]

    def delete_topics(self) -> None:
        """Delete the deployment's topics (after :meth:`stop`)."""
        asyncio.run(delete_topics(self.kafka_bootstrap, self.prefix))

    def stop(self) -> None:
        for agent in self.processes.values():
            if agent.alive():
                agent.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for agent in self.processes.values():
            try:
                agent.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                agent.process.kill()
                agent.process.wait()


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port, in a thread, and yield its
    base URL; stop it afterwards."""
    import threading

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)

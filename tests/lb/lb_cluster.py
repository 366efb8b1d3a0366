"""Real processes for the load balancer's tests: a DNS server on loopback, component servers on
127.0.0.2, .3 and .4 (one port, so one name resolves to all of them), and ``lb`` itself."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent
NAME = "components.lb.test"
ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
INTERVAL_S = 0.3
STARTUP_TIMEOUT_S = 15.0
LB_MAIN = (
    "import argparse, sys\n"
    "from stepflow_stream.cli import lb\n"
    "parser = argparse.ArgumentParser()\n"
    "lb.add_arguments(parser)\n"
    "sys.exit(lb.command(parser.parse_args()))\n"
)


class Process:
    """A subprocess that announces ``{"port": N}`` on stdout once it listens."""

    def __init__(self, command: list[str], log: Path) -> None:
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=self._log,
            stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], STARTUP_TIMEOUT_S)
        line = self.process.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError(f"{command[:4]} did not start; see {log}:\n{log.read_text()}")
        self.port = int(json.loads(line)["port"])

    def kill(self) -> None:
        """SIGKILL: the process dies without closing anything itself."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


class Cluster:
    """DNS, three component servers and a load balancer; each test leaves all three up."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.zone = directory / "zone.txt"
        self.set_zone(ADDRESSES)
        self.dns = Process([sys.executable, str(HERE / "lb_dns_server.py"), str(self.zone)],
                           directory / "dns.log")
        self.backend_port = _free_port(ADDRESSES[0])
        self.backends: dict[str, Process] = {}
        for address in ADDRESSES:
            self.start_backend(address)
        self.lb = Process(
            [sys.executable, "-c", LB_MAIN, "--upstream", f"{NAME}:{self.backend_port}",
             "--port", "0", "--resolver", f"127.0.0.1:{self.dns.port}",
             "--interval", str(INTERVAL_S), "--health-timeout", "0.5",
             "--connect-timeout", "0.5", "--log-level", "warning"],
            directory / "lb.log",
        )
        self.url = f"http://127.0.0.1:{self.lb.port}"

    def set_zone(self, addresses: tuple[str, ...]) -> None:
        """What the DNS server answers for NAME from now on (written whole, then renamed)."""
        staged = self.zone.with_suffix(".new")
        staged.write_text("".join(f"{NAME} {address}\n" for address in addresses))
        staged.replace(self.zone)

    def start_backend(self, address: str, instance_id: str | None = None) -> None:
        self.backends[address] = Process(
            [sys.executable, "-m", "stepflow_stream", "serve-components", "lb_components:server",
             "--app-dir", str(HERE), "--host", address, "--port", str(self.backend_port),
             "--instance-id", instance_id or instance_of(address), "--log-level", "warning"],
            self.directory / f"backend-{address}.log",
        )
        assert self.backends[address].port == self.backend_port

    def health(self) -> dict[str, Any]:
        document: dict[str, Any] = httpx.get(self.url + "/health", timeout=5).json()
        return document

    def up_instances(self) -> set[str]:
        return {b["instanceId"] for b in self.health()["backends"] if b["up"]}

    def wait_for(self, instances: set[str], timeout_s: float = 10.0) -> float:
        """Wait until exactly ``instances`` are up; returns the seconds it took."""
        started = time.monotonic()
        while (up := self.up_instances()) != instances:
            if time.monotonic() - started > timeout_s:
                raise AssertionError(f"up: {up}, expected {instances}")
            time.sleep(0.05)
        return time.monotonic() - started

    def restore(self) -> None:
        """All three backends resolved, running and up, with their first instance ids."""
        self.set_zone(ADDRESSES)
        for address in ADDRESSES:
            process = self.backends[address]
            if process.process.poll() is not None:
                process.stop()
                self.start_backend(address)
        self.wait_for({instance_of(address) for address in ADDRESSES})

    def stop(self) -> None:
        for process in [self.lb, *self.backends.values(), self.dns]:
            process.stop()


def instance_of(address: str) -> str:
    return "lb-" + address.rsplit(".", 1)[1]


def execute(component: str, input: Any, id: int = 1) -> bytes:
    """A ``components/execute`` request body."""
    return json.dumps({
        "jsonrpc": "2.0", "id": id, "method": "components/execute",
        "params": {"component": component, "input": input, "attempt": 1,
                   "observability": {"run_id": "run-1", "step_id": "step-1"}},
    }).encode()


def _free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        port: int = probe.getsockname()[1]
        return port

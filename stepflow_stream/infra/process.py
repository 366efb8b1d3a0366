"""What the Kafka and PostgreSQL launchers share: the error, a service's status, pid checks,
stopping a process, ports, state files, a lock per service folder, and log tails."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stepflow_stream.errors import StepflowError

Progress = Callable[[str], None]
"""Where a launcher reports what it is doing (the CLI prints it on stderr)."""

DEFAULT_DIR = Path(".stepflow/infra")


def silent(message: str) -> None:
    """A :data:`Progress` that reports nothing."""


class InfraError(StepflowError):
    """A local service that cannot be fetched, started, reached or stopped. The message says
    which and why, and carries the tail of the service's log when there is one."""


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """What ``infra status`` knows about one local service."""

    name: str
    """``kafka`` or ``postgres``."""
    running: bool
    pid: int | None
    """The broker's or postmaster's process id, when running."""
    ports: dict[str, int]
    """The ports it listens on (or will, from its state file); empty before its first start."""
    url: str | None
    """How a client reaches it: the bootstrap servers, or the PostgreSQL URL."""

    def describe(self) -> str:
        """One line: ``kafka: running, pid 123, ...`` or ``postgres: stopped``."""
        if not self.running:
            return f"{self.name}: stopped"
        ports = ", ".join(f"{name} port {port}" for name, port in self.ports.items())
        return f"{self.name}: running, pid {self.pid}, {ports}, {self.url}"


def read_cmdline(pid: int) -> list[str] | None:
    """The arguments of a live process, or None when there is no such process (or a zombie)."""
    proc = Path(f"/proc/{pid}")
    try:
        # The state is the field after the parenthesised command name, which may hold spaces.
        state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
        if state in ("Z", "X"):
            _reap(pid)
            return None
        raw = (proc / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _reap(pid: int) -> None:
    """Collect a child of ours that exited, so its pid is free; ignore anybody else's."""
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def live_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in ``pid_file`` (its first line) if that process lives and its command line
    contains ``marker``: a pid file left by a process that died, whose number was reused since,
    does not count."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    cmdline = read_cmdline(pid)
    if cmdline is None or not any(marker in part for part in cmdline):
        return None
    return pid


def terminate(pid: int, timeout: float) -> None:
    """SIGTERM, wait up to ``timeout`` seconds for the process to go, then SIGKILL and wait."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if read_cmdline(pid) is None:
                return
            time.sleep(0.05)
    raise InfraError(f"process {pid} is still there after SIGKILL")


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def check_port_free(port: int, what: str, state_file: Path) -> None:
    """Fail clearly when a remembered port was taken by another program meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers bind: a connection in TIME_WAIT does not make the port busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise InfraError(
                f"{what} port {port} (remembered in {state_file}) is in use by another "
                f"program ({exc.strerror}); stop it, or delete {state_file} to pick new ports"
            ) from exc


def read_state(path: Path) -> dict[str, Any]:
    """A service's state file (ports, ids, passwords); empty before its first start."""
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise InfraError(f"{path} is not valid JSON ({exc}); delete it to start afresh") from exc
    return state


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Write a state file readable by its owner only (it may hold a password)."""
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(state, file, indent=2)
        file.write("\n")
    temporary.replace(path)


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the service folder's lock: two shells running ``infra up`` at once start one
    service, and ``down`` does not stop one that is half started."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, indented, to put in an error message."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"  ({path} does not exist)"
    tail = text.splitlines()[-lines:] or ["(empty)"]
    return f"  last lines of {path}:\n" + "\n".join(f"    {line}" for line in tail)

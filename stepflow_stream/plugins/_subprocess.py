"""A component server the plugin runs as its own subprocess (``command:`` mode).

The server binds a free port and prints one line ``{"port": N}`` on stdout, as stepflow-py's
``run_http_server`` does; then it is polled with ``GET /health`` until it answers. A watcher
notices when the process exits; the next call starts a new one. The process gets its own
session, so stopping it (SIGTERM, then SIGKILL after a grace period) reaches anything it
started too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence

import msgspec

from stepflow_stream.plugins._http11 import HttpClient, HttpError

logger = logging.getLogger(__name__)


class ServerStartError(Exception):
    """The component server could not be started or did not become healthy."""


class ComponentServerProcess:
    """Starts, watches, restarts and stops one component server process."""

    def __init__(
        self,
        name: str,
        command: str,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        startup_timeout: float,
        stop_grace: float,
        on_start: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self.command = command
        self.args = list(args)
        self.env = dict(env)
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.on_start = on_start
        """Called with the URL once a new server is healthy, before any call uses it."""
        self.url: str | None = None
        """The server's URL while it runs and is healthy; None otherwise."""
        self.instance_id: str | None = None
        """What the running server's ``/health`` reported as ``instanceId``."""
        self._process: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._drain: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def ensure_running(self, client: HttpClient) -> str:
        """The URL of a healthy server, starting one first if none runs.

        Raises :class:`ServerStartError` when the process exits early, prints no port, or is
        not healthy within the startup timeout.
        """
        async with self._lock:
            if self.url is not None:
                return self.url
            await self._terminate()
            try:
                return await asyncio.wait_for(self._start(client), self.startup_timeout)
            except TimeoutError:
                await self._terminate()
                raise ServerStartError(
                    f"component server '{self.name}' ({self.command}) was not healthy within "
                    f"{self.startup_timeout:g} s"
                ) from None
            except BaseException:
                await self._terminate()
                raise

    async def settle(self, wait: float) -> None:
        """Give a process that has just broken a connection up to ``wait`` seconds to be seen
        exit, so the next call restarts it instead of trying the dead port again.

        Exit is read from /proc as well as from asyncio's child watcher, which can lag behind
        on a loaded machine: a process that has exited but is not yet reaped is a zombie."""
        process = self._process
        if process is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while process.returncode is None and not _exited(process.pid):
            if loop.time() >= deadline:
                return
            await asyncio.sleep(0.01)
        self.url = None

    async def stop(self) -> None:
        """Stop the server: SIGTERM to its session, SIGKILL after the grace period."""
        async with self._lock:
            await self._terminate()

    async def _start(self, client: HttpClient) -> str:
        try:
            process = self._process = await asyncio.create_subprocess_exec(
                self.command,
                *self.args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        except OSError as exc:
            raise ServerStartError(
                f"cannot start component server '{self.name}' ({self.command}): {exc}"
            ) from None
        port = await self._read_port(process)
        self._drain = asyncio.create_task(self._drain_stdout(process))
        url = f"http://127.0.0.1:{port}"
        self.instance_id = await self._wait_healthy(client, process, url)
        if self.on_start is not None:
            await self.on_start(url)
        self._watcher = asyncio.create_task(self._watch(process))
        self.url = url
        logger.info("component server '%s' (pid %d) is up at %s", self.name, process.pid, url)
        return url

    async def _read_port(self, process: asyncio.subprocess.Process) -> int:
        assert process.stdout is not None
        while True:
            line = await process.stdout.readline()
            if not line:
                code = await process.wait()
                raise ServerStartError(
                    f"component server '{self.name}' ({self.command}) exited with code {code} "
                    'before printing {"port": N}'
                )
            try:
                announced = msgspec.json.decode(line)
            except msgspec.DecodeError:
                announced = None
            if isinstance(announced, dict) and isinstance(announced.get("port"), int):
                return int(announced["port"])
            logger.debug("component server '%s': %s", self.name, line.decode(errors="replace"))

    async def _drain_stdout(self, process: asyncio.subprocess.Process) -> None:
        # A full pipe would block the server; what it prints after the port is only logged.
        assert process.stdout is not None
        async for line in process.stdout:
            logger.debug("component server '%s': %s", self.name, line.decode(errors="replace"))

    async def _wait_healthy(
        self, client: HttpClient, process: asyncio.subprocess.Process, url: str
    ) -> str | None:
        delay = 0.01
        while True:
            if process.returncode is not None:
                raise ServerStartError(
                    f"component server '{self.name}' exited with code {process.returncode} "
                    "before it was healthy"
                )
            with contextlib.suppress(HttpError, msgspec.DecodeError):
                response = await client.request("GET", f"{url}/health")
                body = await response.read()
                if response.status == 200:
                    health = msgspec.json.decode(body)
                    instance = health.get("instanceId") if isinstance(health, dict) else None
                    return instance if isinstance(instance, str) else None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if self._process is process:
            self.url = None
            logger.warning(
                "component server '%s' (pid %d) exited with code %d; the next call restarts it",
                self.name, process.pid, code,
            )

    async def _terminate(self) -> None:
        process, self._process = self._process, None
        self.url = None
        for task in (self._watcher, self._drain):
            if task is not None:
                task.cancel()
        self._watcher = self._drain = None
        if process is None or process.returncode is not None:
            return
        self._signal(process, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self.stop_grace)
        except TimeoutError:
            logger.warning(
                "component server '%s' (pid %d) ignored SIGTERM for %g s; killing it",
                self.name, process.pid, self.stop_grace,
            )
            self._signal(process, signal.SIGKILL)
            await process.wait()

    @staticmethod
    def _signal(process: asyncio.subprocess.Process, sig: signal.Signals) -> None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:  # not the session leader we think it is: signal it alone
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)


def _exited(pid: int) -> bool:
    """Whether ``pid`` has exited (gone, or a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return bool(fields) and fields[0] in ("Z", "X")

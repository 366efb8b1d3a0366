"""A local PostgreSQL server on 127.0.0.1, from the machine's PostgreSQL binaries, with a
database ``stepflow`` owned by a role ``stepflow`` that logs in with a password.

Everything lives in ``DIR/postgres``::

    data/               the cluster (initdb), owned by the user the server runs as
    run/                its unix socket (superuser access for setting up the role)
    log/postgres.log    the server's log
    state.json          port and password chosen at the first start (readable by owner only)

PostgreSQL refuses to run as root: when root starts it, initdb and pg_ctl run as the
``postgres`` user (``runuser``), which then owns ``data/``, ``run/`` and ``log/``.
"""

from __future__ import annotations

import asyncio
import grp
import hashlib
import os
import pwd
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from stepflow_stream.infra.process import (
    DEFAULT_DIR,
    InfraError,
    Progress,
    ServiceStatus,
    check_port_free,
    free_port,
    live_pid,
    locked,
    log_tail,
    read_state,
    silent,
    write_state,
)

DATABASE = "stepflow"
ROLE = "stepflow"
_SERVICE_USER = "postgres"
# A unix socket path is at most 107 bytes; the socket's name adds 16 to its directory.
_MAX_SOCKET_DIR = 90


@dataclass(frozen=True, slots=True)
class _Layout:
    """The files of one local PostgreSQL server."""

    folder: Path

    @property
    def server_folder(self) -> Path:
        """Where the files the server itself writes live (data, socket, log): ``folder``,
        unless the service user cannot enter it (a checkout under a 0700 folder, as mkdtemp
        makes); then a folder of the system temp dir named after it."""
        user = _service_user()
        if user is None or _closed_parent(self.folder, user) is None:
            return self.folder
        return Path(tempfile.gettempdir()) / f"stepflow-pg-{self._digest()}-server"

    def _digest(self) -> str:
        return hashlib.sha256(str(self.folder).encode()).hexdigest()[:12]

    @property
    def data(self) -> Path:
        return self.server_folder / "data"

    @property
    def socket_dir(self) -> Path:
        run = self.server_folder / "run"
        if len(str(run)) <= _MAX_SOCKET_DIR:
            return run
        return Path(tempfile.gettempdir()) / f"stepflow-pg-{self._digest()}"

    @property
    def log(self) -> Path:
        return self.server_folder / "log" / "postgres.log"

    @property
    def state(self) -> Path:
        return self.folder / "state.json"

    @property
    def pid_file(self) -> Path:
        return self.data / "postmaster.pid"


@dataclass(frozen=True, slots=True)
class _State:
    """What the first start chose, kept in ``state.json`` for every later start."""

    port: int
    password: str

    @property
    def url(self) -> str:
        return f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"


def _layout(infra_dir: Path | str) -> _Layout:
    return _Layout(Path(infra_dir).resolve() / "postgres")


def ensure_postgres(infra_dir: Path | str = DEFAULT_DIR, *, timeout: float = 60.0,
                    progress: Progress = silent) -> str:
    """Start the local PostgreSQL server unless it runs already, and return the URL of its
    ``stepflow`` database (``postgresql://stepflow:PASSWORD@127.0.0.1:PORT/stepflow``) once
    asyncpg can connect to it.

    The first call runs initdb and picks a free port and a password; later calls reuse them.
    The server runs in its own session, so it outlives the caller until :func:`stop_postgres`.
    Blocking: call it from a thread (``asyncio.to_thread``) inside an event loop.
    """
    layout = _layout(infra_dir)
    with locked(layout.folder):
        state = _state(layout)
        url = state.url
        pid = live_pid(layout.pid_file, str(layout.data))
        if pid is not None:
            progress(f"postgres: already running, pid {pid}, port {state.port}")
            return url
        check_port_free(state.port, "PostgreSQL", layout.state)
        started = time.monotonic()
        _prepare_folders(layout, progress)
        progress(f"postgres: starting on 127.0.0.1:{state.port} ...")
        _start(layout, state.port, timeout)
        asyncio.run(_provision(layout, state))
        asyncio.run(_wait_connectable(url, layout, timeout))
        pid = live_pid(layout.pid_file, str(layout.data))
        progress(f"postgres: ready in {time.monotonic() - started:.1f} s, pid {pid}")
        return url


def stop_postgres(infra_dir: Path | str = DEFAULT_DIR, *, timeout: float = 60.0,
                  progress: Progress = silent) -> bool:
    """Stop the local server (``pg_ctl stop -m fast``: clients are disconnected, transactions
    rolled back). Returns whether it was running. Its data stays for the next start."""
    layout = _layout(infra_dir)
    if not layout.folder.is_dir():
        progress("postgres: not running")
        return False
    with locked(layout.folder):
        pid = live_pid(layout.pid_file, str(layout.data))
        if pid is None:
            progress("postgres: not running")
            return False
        progress(f"postgres: stopping pid {pid} ...")
        _pg_ctl(layout, "stop", "-D", str(layout.data), "-m", "fast", "-w",
                "-t", str(int(timeout)))
        progress("postgres: stopped")
        return True


def postgres_status(infra_dir: Path | str = DEFAULT_DIR) -> ServiceStatus:
    """Whether the local server runs, its pid, port and URL."""
    layout = _layout(infra_dir)
    saved = _saved_state(layout)
    pid = live_pid(layout.pid_file, str(layout.data))
    if saved is None:
        return ServiceStatus("postgres", pid is not None, pid, {}, None)
    return ServiceStatus("postgres", pid is not None, pid, {"postgres": saved.port}, saved.url)


def _saved_state(layout: _Layout) -> _State | None:
    saved = read_state(layout.state)
    if not {"port", "password"} <= saved.keys():
        return None
    return _State(int(saved["port"]), str(saved["password"]))


def _state(layout: _Layout) -> _State:
    """The port and password, chosen at the first start and kept from then on."""
    state = _saved_state(layout)
    if state is None:
        # Hex: safe in a URL and inside a quoted SQL literal.
        state = _State(free_port(), secrets.token_hex(16))
        layout.folder.mkdir(parents=True, exist_ok=True)
        write_state(layout.state, asdict(state))
    return state


def _service_user() -> pwd.struct_passwd | None:
    """The user PostgreSQL runs as, when it is not the caller: ``postgres`` for root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(_SERVICE_USER)
    except KeyError:
        raise InfraError(f"PostgreSQL refuses to run as root, and there is no "
                         f"'{_SERVICE_USER}' user to run it as") from None


def _binary(name: str) -> str:
    """A PostgreSQL program: from PATH, else the newest /usr/lib/postgresql/N/bin (Debian
    keeps them off PATH)."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                      key=lambda path: [int(part) for part in re.findall(r"\d+", path.parent.name)])
    for bin_dir in reversed(versions):
        if (bin_dir / name).is_file():
            return str(bin_dir / name)
    raise InfraError(f"{name} not found on PATH nor in /usr/lib/postgresql/*/bin: "
                     f"install PostgreSQL's server package")


def _as_service_user(command: list[str]) -> list[str]:
    user = _service_user()
    return ["runuser", "-u", user.pw_name, "--", *command] if user else command


def _prepare_folders(layout: _Layout, progress: Progress) -> None:
    """Make ``data/``, ``run/`` and ``log/``, owned by the service user, and initdb once."""
    user = _service_user()
    if user is not None:
        _check_reachable(layout.server_folder, user)
    for folder in (layout.data, layout.socket_dir, layout.log.parent):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if user is not None:
            os.chown(folder, user.pw_uid, user.pw_gid)
    if (layout.data / "PG_VERSION").is_file():
        return
    progress(f"postgres: initdb {layout.data}")
    command = [_binary("initdb"), "-D", str(layout.data), "-U", _SERVICE_USER,
               "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale"]
    _run(_as_service_user(command), "initdb", cwd=layout.data)


def _closed_parent(folder: Path, user: pwd.struct_passwd) -> Path | None:
    """The first existing folder on the way to ``folder`` that ``user`` cannot enter."""
    groups = {group.gr_gid for group in grp.getgrall() if user.pw_name in group.gr_mem}
    groups.add(user.pw_gid)
    for directory in (folder, *folder.parents):
        if not directory.exists():
            continue
        info = directory.stat()
        if info.st_uid == user.pw_uid:
            allowed = info.st_mode & 0o100
        elif info.st_gid in groups:
            allowed = info.st_mode & 0o010
        else:
            allowed = info.st_mode & 0o001
        if not allowed:
            return directory
    return None


def _check_reachable(folder: Path, user: pwd.struct_passwd) -> None:
    """Fail clearly when the service user cannot enter a parent folder."""
    directory = _closed_parent(folder, user)
    if directory is not None:
        mode = directory.stat().st_mode & 0o777
        raise InfraError(
            f"the '{user.pw_name}' user, which PostgreSQL runs as when root starts it, "
            f"cannot enter {directory} (mode {mode:o}): use an infra "
            f"folder that others can enter, or chmod o+x {directory}")


def _start(layout: _Layout, port: int, timeout: float) -> None:
    options = (f"-p {port} -k {shlex.quote(str(layout.socket_dir))} "
               f"-c listen_addresses=127.0.0.1")
    try:
        _pg_ctl(layout, "start", "-D", str(layout.data), "-l", str(layout.log), "-w",
                "-t", str(int(timeout)), "-o", options)
    except InfraError as exc:
        raise InfraError(f"{exc}\n{log_tail(layout.log)}") from None


def _pg_ctl(layout: _Layout, *args: str) -> None:
    # Its own session: the server pg_ctl leaves behind must outlive this process and not get
    # the signals of its terminal.
    _run(_as_service_user([_binary("pg_ctl"), *args]), f"pg_ctl {args[0]}",
         cwd=layout.data, new_session=True)


def _run(command: list[str], what: str, *, cwd: Path, new_session: bool = False) -> None:
    # The service user may not be able to enter the caller's working directory.
    done = subprocess.run(command, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, check=False, start_new_session=new_session)
    if done.returncode != 0:
        raise InfraError(f"{what} failed (exit code {done.returncode}):\n"
                         f"$ {shlex.join(command)}\n{done.stdout}{done.stderr}".rstrip())


async def _provision(layout: _Layout, state: _State) -> None:
    """Create (or reset the password of) the role, and create its database: as the superuser,
    over the unix socket that only the service user (and root) can enter."""
    import asyncpg  # the CLI's other commands should not pay for importing it

    connection = await asyncpg.connect(host=str(layout.socket_dir), port=state.port,
                                       user=_SERVICE_USER, database="postgres")
    try:
        verb = "ALTER" if await connection.fetchval(
            "SELECT 1 FROM pg_roles WHERE rolname = $1", ROLE) else "CREATE"
        await connection.execute(
            f"{verb} ROLE {ROLE} LOGIN CREATEDB PASSWORD '{state.password}'")
        if not await connection.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", DATABASE):
            await connection.execute(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
    finally:
        await connection.close()


async def _wait_connectable(url: str, layout: _Layout, timeout: float) -> None:
    """Ready means a client gets in with the URL's password over TCP."""
    import asyncpg

    deadline = time.monotonic() + timeout
    while True:
        try:
            connection = await asyncpg.connect(url, timeout=5)
        except (OSError, asyncpg.PostgresError) as exc:
            if time.monotonic() > deadline:
                raise InfraError(f"PostgreSQL does not accept connections to {url}: {exc}\n"
                                 f"{log_tail(layout.log)}") from None
            await asyncio.sleep(0.2)
            continue
        try:
            await connection.fetchval("SELECT 1")
        finally:
            await connection.close()
        return

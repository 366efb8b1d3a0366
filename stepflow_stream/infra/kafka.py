"""A local Apache Kafka broker: one KRaft node (broker and controller) on 127.0.0.1, started from
jars that Maven fetches from Maven Central, with the machine's Java.

Everything lives in ``DIR/kafka``::

    libs/               the jars (``infra/kafka/pom.xml``'s runtime dependencies)
    data/               the log dirs (topics, the metadata log), formatted once
    logs/server.log     the broker's log; logs/stdout.log has the JVM's own output
    server.properties   written from ``infra/kafka/server.properties.template``
    state.json          the ports and cluster id chosen at the first start
    kafka.pid           the broker's process id, for ``stop_kafka`` from any shell
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shlex
import shutil
import socket
import string
import subprocess
import time
import uuid
import xml.etree.ElementTree as ElementTree
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
    terminate,
    write_state,
)

SOURCES = Path(__file__).resolve().parents[2] / "infra" / "kafka"
"""The pom.xml and config templates, in the source checkout this package is installed from."""

_HEAP_DEFAULT = "-Xms512M -Xmx512M"
# The JVM flags of Kafka's own kafka-run-class.sh.
_JVM_FLAGS = ["-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
              "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
              "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true"]


@dataclass(frozen=True, slots=True)
class _Layout:
    """The files of one local broker."""

    folder: Path

    @property
    def libs(self) -> Path:
        return self.folder / "libs"

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def logs(self) -> Path:
        return self.folder / "logs"

    @property
    def properties(self) -> Path:
        return self.folder / "server.properties"

    @property
    def log4j(self) -> Path:
        return self.folder / "log4j2.properties"

    @property
    def state(self) -> Path:
        return self.folder / "state.json"

    @property
    def pid_file(self) -> Path:
        return self.folder / "kafka.pid"


@dataclass(frozen=True, slots=True)
class _State:
    """What the first start chose, kept in ``state.json`` for every later start."""

    broker_port: int
    controller_port: int
    cluster_id: str

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker_port}"


def _layout(infra_dir: Path | str) -> _Layout:
    return _Layout(Path(infra_dir).resolve() / "kafka")


def kafka_version() -> str:
    """The Kafka version that ``infra/kafka/pom.xml`` pins."""
    pom = _source("pom.xml")
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ElementTree.parse(pom).findtext("m:properties/m:kafka.version", namespaces=namespace)
    if not version:
        raise InfraError(f"{pom} has no <kafka.version> property")
    return version


def ensure_kafka(infra_dir: Path | str = DEFAULT_DIR, *, timeout: float = 90.0,
                 progress: Progress = silent) -> str:
    """Start the local broker unless it runs already, and return its bootstrap servers
    (``127.0.0.1:PORT``) once a client can fetch metadata from it.

    The first call fetches the jars (Maven's ``~/.m2`` cache makes later fetches quick),
    picks free ports and formats the storage; later calls reuse all three. The broker runs in
    its own session, so it outlives the caller until :func:`stop_kafka`. Blocking: call it
    from a thread (``asyncio.to_thread``) inside an event loop.
    """
    layout = _layout(infra_dir)
    with locked(layout.folder):
        state = _state(layout)
        bootstrap = state.bootstrap
        pid = live_pid(layout.pid_file, str(layout.properties))
        if pid is not None:
            progress(f"kafka: already running, pid {pid}, {bootstrap}")
            return bootstrap
        check_port_free(state.broker_port, "Kafka broker", layout.state)
        check_port_free(state.controller_port, "Kafka controller", layout.state)
        started = time.monotonic()
        _fetch_jars(layout, progress)
        _write_config(layout, state)
        _format_storage(layout, state, progress)
        progress(f"kafka: starting Kafka {kafka_version()} on {bootstrap} ...")
        process = _launch(layout)
        _wait_ready(layout, process, bootstrap, timeout)
        progress(f"kafka: ready in {time.monotonic() - started:.1f} s, pid {process.pid}")
        return bootstrap


def stop_kafka(infra_dir: Path | str = DEFAULT_DIR, *, timeout: float = 30.0,
               progress: Progress = silent) -> bool:
    """Stop the local broker (SIGTERM, then SIGKILL after ``timeout`` seconds). Returns whether
    it was running. Its data stays for the next start."""
    layout = _layout(infra_dir)
    if not layout.folder.is_dir():
        progress("kafka: not running")
        return False
    with locked(layout.folder):
        pid = live_pid(layout.pid_file, str(layout.properties))
        if pid is None:
            progress("kafka: not running")
            layout.pid_file.unlink(missing_ok=True)
            return False
        progress(f"kafka: stopping pid {pid} ...")
        terminate(pid, timeout)
        layout.pid_file.unlink(missing_ok=True)
        progress("kafka: stopped")
        return True


def kafka_status(infra_dir: Path | str = DEFAULT_DIR) -> ServiceStatus:
    """Whether the local broker runs, its pid, ports and bootstrap servers."""
    layout = _layout(infra_dir)
    state = read_state(layout.state)
    ports = {name.removesuffix("_port"): int(state[name])
             for name in ("broker_port", "controller_port") if name in state}
    pid = live_pid(layout.pid_file, str(layout.properties))
    url = f"127.0.0.1:{ports['broker']}" if "broker" in ports else None
    return ServiceStatus("kafka", pid is not None, pid, ports, url)


def _source(name: str) -> Path:
    path = SOURCES / name
    if not path.is_file():
        raise InfraError(f"{path} not found: the local Kafka is started from a source checkout "
                         f"of stepflow-stream (pip install -e)")
    return path


def _state(layout: _Layout) -> _State:
    """The ports and cluster id, chosen at the first start and kept from then on."""
    saved = read_state(layout.state)
    if {"broker_port", "controller_port", "cluster_id"} <= saved.keys():
        return _State(int(saved["broker_port"]), int(saved["controller_port"]),
                      str(saved["cluster_id"]))
    broker_port = free_port()
    controller_port = free_port()
    while controller_port == broker_port:
        controller_port = free_port()
    # 16 random bytes, base64url without padding; Kafka's tools reject one starting with -.
    cluster_id = "-"
    while cluster_id.startswith("-"):
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    state = _State(broker_port, controller_port, cluster_id)
    layout.folder.mkdir(parents=True, exist_ok=True)
    write_state(layout.state, asdict(state))
    return state


def _fetch_jars(layout: _Layout, progress: Progress) -> None:
    """Copy the pom's runtime dependencies into ``libs/``, unless they are there for this very
    pom already."""
    pom = _source("pom.xml")
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()
    stamp = layout.libs / ".pom-sha256"
    if stamp.is_file() and stamp.read_text().strip() == digest:
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        raise InfraError("Maven (mvn) is not on PATH: it fetches Kafka's jars")
    progress(f"kafka: fetching Kafka {kafka_version()} jars with Maven into {layout.libs} ...")
    partial = layout.folder / "libs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    command = [mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(pom),
               "dependency:copy-dependencies", f"-DoutputDirectory={partial}",
               "-DincludeScope=runtime"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        output = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise InfraError(f"Maven could not fetch Kafka's jars (exit code {done.returncode}):\n"
                         f"$ {shlex.join(command)}\n{output}")
    (partial / ".pom-sha256").write_text(digest + "\n")
    shutil.rmtree(layout.libs, ignore_errors=True)
    partial.rename(layout.libs)


def _write_config(layout: _Layout, state: _State) -> None:
    template = string.Template(_source("server.properties.template").read_text())
    layout.properties.write_text(template.substitute(
        broker_port=state.broker_port, controller_port=state.controller_port,
        data_dir=layout.data))
    shutil.copyfile(_source("log4j2.properties"), layout.log4j)


def _java_command(layout: _Layout, jvm_options: list[str], main_class: str,
                  *args: str) -> list[str]:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if java is None or not Path(java).is_file():
        raise InfraError("java is not on PATH (nor in JAVA_HOME): Kafka 4 needs Java 17+")
    return [java, *jvm_options, f"-Dkafka.logs.dir={layout.logs}",
            f"-Dlog4j2.configurationFile={layout.log4j}", "-cp", str(layout.libs / "*"),
            main_class, *args]


def _format_storage(layout: _Layout, state: _State, progress: Progress) -> None:
    """Format the log dirs once (KRaft needs it before the first start)."""
    if (layout.data / "meta.properties").is_file():
        return
    progress(f"kafka: formatting storage in {layout.data}")
    layout.logs.mkdir(parents=True, exist_ok=True)
    # Static quorum (controller.quorum.voters): no --standalone.
    command = _java_command(layout, [], "kafka.tools.StorageTool", "format",
                            "-t", state.cluster_id, "-c", str(layout.properties),
                            "--ignore-formatted")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise InfraError(f"formatting Kafka's storage failed (exit code {done.returncode}):\n"
                         f"{done.stdout}{done.stderr}")


def _launch(layout: _Layout) -> subprocess.Popen[bytes]:
    layout.logs.mkdir(parents=True, exist_ok=True)
    heap = shlex.split(os.environ.get("KAFKA_HEAP_OPTS", _HEAP_DEFAULT))
    command = _java_command(layout, [*heap, *_JVM_FLAGS], "kafka.Kafka", str(layout.properties))
    with (layout.logs / "stdout.log").open("ab") as stdout:
        process = subprocess.Popen(command, cwd=layout.folder, stdin=subprocess.DEVNULL,
                                   stdout=stdout, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    layout.pid_file.write_text(f"{process.pid}\n")
    return process


def _wait_ready(layout: _Layout, process: subprocess.Popen[bytes], bootstrap: str,
                timeout: float) -> None:
    """Wait until a client can fetch metadata naming a broker; on failure, stop the broker and
    raise with its log tail."""
    deadline = time.monotonic() + timeout
    while not _answers_metadata(bootstrap):
        code = process.poll()
        if code is not None:
            layout.pid_file.unlink(missing_ok=True)
            raise InfraError(f"Kafka exited with code {code} while starting\n"
                             f"{log_tail(layout.logs / 'server.log')}\n"
                             f"{log_tail(layout.logs / 'stdout.log', 10)}")
        if time.monotonic() > deadline:
            terminate(process.pid, 10.0)
            layout.pid_file.unlink(missing_ok=True)
            raise InfraError(f"Kafka did not answer a metadata request on {bootstrap} within "
                             f"{timeout:.0f} s\n{log_tail(layout.logs / 'server.log')}")
        time.sleep(0.2)


def _answers_metadata(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    try:
        # A plain connect first: while the port is closed, aiokafka would log every refusal.
        socket.create_connection((host, int(port)), timeout=1.0).close()
    except OSError:
        return False
    return asyncio.run(_fetch_metadata(bootstrap))


async def _fetch_metadata(bootstrap: str) -> bool:
    # Imported here: the CLI's other commands should not pay for importing aiokafka.
    from aiokafka.client import AIOKafkaClient
    from aiokafka.errors import KafkaError

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(client.bootstrap(), 10.0)
        return bool(client.cluster.brokers())
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await client.close()

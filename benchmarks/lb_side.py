"""The load balancer against a direct connection and nginx, on the same component servers.

``python -m benchmarks.lb_side [--reps 5]`` starts, once for the whole run:

- three component servers (``serve-components benchmarks.echo_server:server``, one no-op echo
  component) on 127.0.0.2, .3 and .4, one port, and a DNS server (a thread of this process)
  that resolves one name to the three;
- ``stepflow-stream lb`` twice: in front of the three (found by DNS), and in front of the
  first alone (the single-backend variant, where one Python backend leaves the proxy a core of
  its own, so what the proxy itself costs shows in latency rather than in lost backend CPU);
- nginx twice, the same two upstreams (``least_conn``, keep-alive to the upstreams, response
  buffering off as SSE needs, one worker process like our one process), run as ``nobody`` in
  the foreground from a config generated in a temporary directory.

The load generator is ``wrk`` (C, one thread per target address, a Lua script sets the POST
body and reports what it measured). Each repetition measures, for direct, lb and nginx in a
rotating order: the latency of sequential ``components/execute`` calls on one keep-alive
connection (p50, p99), then requests/s under ``--connections`` concurrent keep-alive
connections, with each process's CPU time per request. Prints one JSON object: medians over
the repetitions, and every repetition's figures under ``"reps"``.

nginx and wrk are Debian packages (``nginx``, ``wrk``); a missing one is installed with
``apt-get install -y --no-install-recommends`` (as root, or with ``sudo -n``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dnslib import QTYPE, RCODE, RR, A, DNSRecord

REPO = Path(__file__).resolve().parent.parent
NAME = "components.lb.bench"
ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
STARTUP_TIMEOUT_S = 20.0
BODY = json.dumps({
    "jsonrpc": "2.0", "id": 1, "method": "components/execute",
    "params": {"component": "/echo", "input": {"text": "hello", "n": 1}, "attempt": 1,
               "observability": {"run_id": "bench-run", "step_id": "echo"}},
})
TARGETS = ("direct", "lb", "nginx")
VARIANTS = ("3", "1")
"""Backends behind the proxies in a throughput measure; latency is measured with 3."""

NGINX = Path("/usr/sbin/nginx")
WRK = Path("/usr/bin/wrk")

_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
local targets = {{{targets}}}
local started = 0
function setup(thread)
  started = started + 1
  if #targets > 0 then
    thread.addr = wrk.lookup(targets[(started - 1) % #targets + 1], "{port}")[1]
  end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\n{{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "status_errors": %d, '
    .. '"socket_errors": %d}}\\n', summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout))
end
"""

_NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
{upstreams}
{servers}
}}
"""


# --- processes ------------------------------------------------------------------------------


class Announced:
    """A subprocess that prints ``{"port": N}`` on stdout once it listens."""

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
            raise SystemExit(f"{' '.join(command[:5])} did not start; see {log}:\n"
                             f"{log.read_text()[-3000:]}")
        self.port = int(json.loads(line)["port"])

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        _stop(self.process)
        self._log.close()


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    if process.stdout is not None:
        process.stdout.close()


def _free_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_listening(address: str, port: int, process: subprocess.Popen[Any], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with contextlib.suppress(OSError), socket.create_connection((address, port), 0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"nginx did not listen on {address}:{port}; see {log}:\n"
                     f"{log.read_text() if log.exists() else ''}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its children alive now (nginx's worker)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for path in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = path.read_text().rsplit(")", 1)[1].split()
            if int(path.parent.name) == pid or int(fields[1]) == pid:
                total += (int(fields[11]) + int(fields[12])) / ticks
    return total


@contextlib.contextmanager
def dns_server(addresses: tuple[str, ...]) -> Iterator[int]:
    """An authoritative DNS server on 127.0.0.1 (a thread) resolving NAME to ``addresses``;
    yields its port. The load balancer asks it once at start and every few seconds after."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stopping = threading.Event()

    def answer() -> None:
        while not stopping.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = DNSRecord.parse(data)
            reply = query.reply()
            if str(query.q.qname).rstrip(".").lower() != NAME:
                reply.header.rcode = RCODE.NXDOMAIN
            elif query.q.qtype == QTYPE.A:
                for address in addresses:
                    reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(address), ttl=60))
            sock.sendto(reply.pack(), peer)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stopping.set()
        thread.join()
        sock.close()


def ensure_debian_package(binary: Path, package: str) -> None:
    """Install ``package`` with apt-get when ``binary`` is missing (apt-get update first if
    the install fails, as on a machine without package lists)."""
    if binary.exists():
        return
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise SystemExit(f"{binary} is missing and installing {package} needs root or sudo")
        prefix = ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    print(f"lb benchmark: installing {package} with apt-get ...", file=sys.stderr, flush=True)
    if subprocess.run(install, env=env, stdout=sys.stderr, check=False).returncode != 0:
        subprocess.run([*prefix, "apt-get", "update", "-q"], env=env, stdout=sys.stderr,
                       check=False)
        subprocess.run(install, env=env, stdout=sys.stderr, check=False)
    if not binary.exists():
        raise SystemExit(f"installing the Debian package {package} did not bring {binary}")


class Nginx:
    """nginx in the foreground as ``nobody``, one ``server`` per upstream: name -> port."""

    def __init__(self, directory: Path, upstreams: dict[str, tuple[str, ...]],
                 backend_port: int) -> None:
        directory.mkdir()
        self.ports = {name: _free_port("127.0.0.1") for name in upstreams}
        upstream_blocks = "".join(
            f"  upstream {name} {{\n    least_conn;\n"
            + "".join(f"    server {address}:{backend_port};\n" for address in addresses)
            + "    keepalive 128;\n  }\n"
            for name, addresses in upstreams.items()
        )
        server_blocks = "".join(
            f"  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n"
            f"      proxy_pass http://{name};\n      proxy_http_version 1.1;\n"
            '      proxy_set_header Connection "";\n      proxy_buffering off;\n    }\n  }\n'
            for name, port in self.ports.items()
        )
        config = directory / "nginx.conf"
        config.write_text(_NGINX_CONF.format(dir=directory, upstreams=upstream_blocks,
                                             servers=server_blocks))
        log = directory / "error.log"
        command = [str(NGINX), "-p", str(directory), "-e", str(log), "-c", str(config)]
        if os.geteuid() == 0:  # a root master would keep root; run the whole of it unprivileged
            nobody = pwd.getpwnam("nobody")
            os.chown(directory, nobody.pw_uid, nobody.pw_gid)
            command = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                       "--clear-groups", *command]
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in self.ports.values():
            _wait_listening("127.0.0.1", port, self.process, log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        # nginx's fast shutdown is SIGTERM; setpriv execs, so the pid is nginx's master.
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _stop(self.process)


# --- wrk ------------------------------------------------------------------------------------


def wrk(url: str, *, connections: int, seconds: int, spread: tuple[str, ...] = (),
        port: int = 0, script_dir: Path) -> dict[str, Any]:
    """Run wrk against ``url`` (or, with ``spread``, its threads against those addresses in
    turn), one thread per address; returns its figures and its own CPU seconds."""
    threads = max(1, len(spread))
    targets = ", ".join(json.dumps(address) for address in spread)
    script = script_dir / f"wrk-{threads}.lua"
    script.write_text(_WRK_SCRIPT.format(body=json.dumps(BODY), targets=targets, port=port))
    command = [str(WRK), "-t", str(threads), "-c", str(connections), "-d", f"{max(1, seconds)}s",
               "--timeout", "5s", "-s", str(script), url]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    stdout, stderr = process.communicate()
    # communicate() reaped it: its rusage went to this process's children's total.
    if process.returncode != 0:
        raise SystemExit(f"wrk failed: {stderr}\n{stdout}")
    figures: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    if figures["status_errors"] or figures["socket_errors"] or not figures["requests"]:
        raise SystemExit(f"wrk against {url} got errors: {figures}\n{stdout}")
    figures["per_s"] = figures["requests"] / (figures["duration_us"] / 1e6)
    return figures


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- the measurement ------------------------------------------------------------------------


class Bench:
    """Everything started once; :meth:`rep` measures one repetition."""

    def __init__(self, directory: Path, args: argparse.Namespace,
                 backends: list[Announced], lbs: dict[str, Announced], nginx: Nginx,
                 backend_port: int) -> None:
        self.directory = directory
        self.args = args
        self.backends = backends
        self.lbs = lbs
        self.nginx = nginx
        self.backend_port = backend_port

    def url(self, target: str, variant: str) -> str:
        if target == "direct":
            return f"http://{ADDRESSES[0]}:{self.backend_port}/"
        if target == "lb":
            return f"http://127.0.0.1:{self.lbs[variant].port}/"
        return f"http://127.0.0.1:{self.nginx.ports['b' + variant]}/"

    def proxy_pid(self, target: str, variant: str) -> int | None:
        if target == "lb":
            return self.lbs[variant].pid
        return self.nginx.pid if target == "nginx" else None

    def latency(self, target: str, seconds: int) -> dict[str, float]:
        figures = wrk(self.url(target, "3"), connections=1, seconds=seconds,
                      script_dir=self.directory)
        return {"p50_ms": figures["p50_us"] / 1e3, "p99_ms": figures["p99_us"] / 1e3}

    def throughput(self, target: str, variant: str, seconds: int) -> dict[str, float]:
        spread = ADDRESSES[:int(variant)] if target == "direct" else ()
        connections = self.args.connections
        if spread:  # wrk gives each thread connections / threads
            connections -= connections % len(spread)
        pid = self.proxy_pid(target, variant)
        backends = self.backends[:int(variant)]
        before = (cpu_seconds(pid) if pid else 0.0,
                  sum(cpu_seconds(b.pid) for b in backends), _children_cpu())
        figures = wrk(self.url(target, variant), connections=connections, seconds=seconds,
                      spread=spread, port=self.backend_port, script_dir=self.directory)
        after = (cpu_seconds(pid) if pid else 0.0,
                 sum(cpu_seconds(b.pid) for b in backends), _children_cpu())
        requests = figures["requests"]
        return {
            "per_s": figures["per_s"],
            "load_p50_ms": figures["p50_us"] / 1e3,
            "load_p99_ms": figures["p99_us"] / 1e3,
            "proxy_cpu_us": (after[0] - before[0]) / requests * 1e6,
            "backend_cpu_us": (after[1] - before[1]) / requests * 1e6,
            "wrk_cpu_us": (after[2] - before[2]) / requests * 1e6,
        }

    def warm_up(self) -> None:
        for target in TARGETS:
            for variant in VARIANTS:
                self.throughput(target, variant, 1)

    def rep(self, index: int) -> dict[str, Any]:
        order = TARGETS[index % 3:] + TARGETS[:index % 3]
        figures: dict[str, Any] = {"latency": {}, "throughput": {v: {} for v in VARIANTS}}
        for target in order:
            figures["latency"][target] = self.latency(target, self.args.latency_seconds)
        for variant in VARIANTS:
            for target in order:
                figures["throughput"][variant][target] = self.throughput(
                    target, variant, self.args.load_seconds)
        return figures


def summarize(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repetitions; added latency and ratios are medians of the per-rep
    differences and ratios (each repetition measured its targets back to back)."""

    def median(values: list[float]) -> float:
        return statistics.median(values)

    summary: dict[str, Any] = {"latency": {}, "throughput": {}}
    for target in TARGETS:
        summary["latency"][target] = {
            key: median([r["latency"][target][key] for r in reps]) for key in ("p50_ms", "p99_ms")
        }
        if target != "direct":
            for key in ("p50_ms", "p99_ms"):
                summary["latency"][target]["added_" + key] = median(
                    [r["latency"][target][key] - r["latency"]["direct"][key] for r in reps])
    for variant in VARIANTS:
        block: dict[str, Any] = {}
        for target in TARGETS:
            keys = reps[0]["throughput"][variant][target].keys()
            block[target] = {
                key: median([r["throughput"][variant][target][key] for r in reps])
                for key in keys
            }
        block["lb_vs_nginx"] = median([
            r["throughput"][variant]["lb"]["per_s"] / r["throughput"][variant]["nginx"]["per_s"]
            for r in reps])
        summary["throughput"][variant] = block
    return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5, help="repetitions (medians reported)")
    parser.add_argument("--connections", type=int, default=64,
                        help="concurrent keep-alive connections of the throughput measure")
    parser.add_argument("--latency-seconds", type=int, default=3,
                        help="seconds of sequential calls per target and repetition")
    parser.add_argument("--load-seconds", type=int, default=5,
                        help="seconds of concurrent load per target, variant and repetition")
    args = parser.parse_args()
    ensure_debian_package(NGINX, "nginx")
    ensure_debian_package(WRK, "wrk")

    with tempfile.TemporaryDirectory(prefix="stepflow-lb-bench-") as work, \
            dns_server(ADDRESSES) as dns_port, contextlib.ExitStack() as stack:
        directory = Path(work)
        directory.chmod(0o711)  # nginx runs as nobody and must reach its own directory in it
        backend_port = _free_port(ADDRESSES[0])
        backends = []
        for n, address in enumerate(ADDRESSES):
            backend = Announced(
                [sys.executable, "-m", "stepflow_stream", "serve-components",
                 "benchmarks.echo_server:server", "--host", address, "--port",
                 str(backend_port), "--instance-id", f"bench-{n}", "--log-level", "warning"],
                directory / f"backend-{address}.log")
            stack.callback(backend.stop)
            backends.append(backend)
        lbs = {}
        for variant, upstream in (("3", f"{NAME}:{backend_port}"),
                                  ("1", f"{ADDRESSES[0]}:{backend_port}")):
            lbs[variant] = Announced(
                [sys.executable, "-m", "stepflow_stream", "lb", "--upstream", upstream,
                 "--port", "0", "--resolver", f"127.0.0.1:{dns_port}", "--log-level",
                 "warning"],
                directory / f"lb-{variant}.log")
            stack.callback(lbs[variant].stop)
        nginx = Nginx(directory / "nginx", {"b3": ADDRESSES, "b1": ADDRESSES[:1]},
                      backend_port)
        stack.callback(nginx.stop)
        bench = Bench(directory, args, backends, lbs, nginx, backend_port)
        bench.warm_up()
        reps = []
        for index in range(args.reps):
            reps.append(bench.rep(index))
            print(f"lb benchmark: repetition {index + 1} of {args.reps} done", file=sys.stderr,
                  flush=True)
    result = summarize(reps)
    result.update(reps=reps, repetitions=args.reps, connections=args.connections,
                  latency_seconds=args.latency_seconds, load_seconds=args.load_seconds,
                  nginx_version=_nginx_version(), cores=os.cpu_count())
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


def _nginx_version() -> str:
    completed = subprocess.run([str(NGINX), "-v"], capture_output=True, text=True, check=False)
    return completed.stderr.strip().rsplit("/", 1)[-1]


if __name__ == "__main__":
    main()

"""Local infrastructure that stepflow-stream starts by itself, without Docker: a real Apache
Kafka broker (KRaft, one node) and a real PostgreSQL server, both on 127.0.0.1, with their
files under one folder (default ``.stepflow/infra``). Used by tests, benchmarks and users::

    bootstrap = ensure_kafka()      # "127.0.0.1:PORT"
    url = ensure_postgres()         # "postgresql://stepflow:PASSWORD@127.0.0.1:PORT/stepflow"
    ...
    stop_kafka(); stop_postgres()

or, from a shell, ``eval "$(stepflow-stream infra up)"`` and ``stepflow-stream infra down``.
"""

from __future__ import annotations

from pathlib import Path

from stepflow_stream.infra.kafka import ensure_kafka, kafka_status, kafka_version, stop_kafka
from stepflow_stream.infra.postgres import ensure_postgres, postgres_status, stop_postgres
from stepflow_stream.infra.process import DEFAULT_DIR, InfraError, Progress, ServiceStatus

__all__ = [
    "DEFAULT_DIR",
    "SERVICES",
    "InfraError",
    "Progress",
    "ServiceStatus",
    "ensure_kafka",
    "ensure_postgres",
    "kafka_status",
    "kafka_version",
    "postgres_status",
    "status",
    "stop_kafka",
    "stop_postgres",
]

SERVICES = ("kafka", "postgres")


def status(infra_dir: Path | str = DEFAULT_DIR,
           services: tuple[str, ...] = SERVICES) -> list[ServiceStatus]:
    """What runs of the given services, in that order."""
    probes = {"kafka": kafka_status, "postgres": postgres_status}
    return [probes[name](infra_dir) for name in services]

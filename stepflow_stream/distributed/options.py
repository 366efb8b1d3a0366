"""The settings of the distributed runtime, read from a config's ``runtime`` and
``stateStore`` sections::

    runtime:
      type: kafka
      bootstrapServers: ${STEPFLOW_KAFKA_BOOTSTRAP:-127.0.0.1:9092}
      topicPrefix: prod.
      partitions: 8
      workers:
        gpu: {concurrency: 2, timeoutSeconds: 600}
    stateStore:
      type: postgres
      databaseUrl: ${STEPFLOW_POSTGRES_URL}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from stepflow_stream.config.model import Config
from stepflow_stream.errors import ConfigError, Location
from stepflow_stream.kafka.topics import TopicNames

__all__ = ["DistributedOptions", "WorkerOptions", "distributed_options"]


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How the worker agent of one component class runs its tasks."""

    concurrency: int = 32
    """Tasks of this class one worker process runs at once."""
    timeout_s: float = 300.0
    """A task still running after this long fails with a retryable TIMEOUT error."""


@dataclass(frozen=True, slots=True)
class DistributedOptions:
    """Everything the orchestrator, the workers and clients of one deployment share."""

    bootstrap_servers: str
    """The Kafka brokers, ``host:port[,host:port]``."""
    database_url: str
    """The PostgreSQL database of snapshots, the run index, the journal projection and blobs."""
    topic_prefix: str = ""
    """Prepended to every topic and consumer group name, so deployments can share a cluster."""
    partitions: int = 4
    """Partitions of the commands and journal topics: the orchestrator parallelism."""
    task_partitions: int = 4
    """Partitions of each task topic: the worker parallelism of a class."""
    replication_factor: int = 1
    """Replicas of each topic the runtime creates."""
    transaction_max_s: float = 0.05
    """How long a journal transaction may stay open while no run in it has ended. Workers see
    tasks before their transaction commits; clients and catch-up see events only after it."""
    checkpoint_every: int = 20_000
    """Events appended to a journal partition between two checkpoints (snapshots of the
    partition's changed runs plus the journal offset they cover). Catching up reads at most
    about this many events; each checkpoint costs a snapshot of every run changed since the
    last one, so checkpointing often costs throughput (runs shorter than the interval mostly
    end without a snapshot)."""
    checkpoint_interval_s: float = 5.0
    """At most this long between checkpoints of a partition that has new events."""
    agent_driver: str = "faust"
    """What feeds the agents records: ``faust`` (Faust agents) or ``direct`` (plain aiokafka
    consumer groups: the same orchestrator and workers, without Faust's per-record cost)."""
    session_timeout_s: float = 10.0
    """How long Kafka waits for a silent agent before it hands its partitions to another."""
    workers: Mapping[str, WorkerOptions] = field(default_factory=dict)
    """Worker settings by component class (plugin name); others get the defaults."""

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.topic_prefix)

    def worker(self, component_class: str) -> WorkerOptions:
        return self.workers.get(component_class, WorkerOptions())


def distributed_options(config: Config) -> DistributedOptions:
    """The distributed settings of ``config``; raises :class:`ConfigError` naming the field
    when the config does not select the kafka runtime and a postgres state store."""
    if config.runtime.type != "kafka":
        raise ConfigError(
            f"the distributed runtime needs 'runtime: {{type: kafka, bootstrapServers: ...}}', "
            f"and the config selects '{config.runtime.type}'",
            Location(config.source, field="runtime"),
        )
    store = config.state_store
    if store.type != "postgres" or not store.database_url:
        raise ConfigError(
            "the distributed runtime needs 'stateStore: {type: postgres, databaseUrl: ...}'",
            Location(config.source, field="stateStore"),
        )
    reader = _SettingsReader(config.source, config.runtime.settings)
    bootstrap = reader.text("bootstrapServers", None)
    options = DistributedOptions(
        bootstrap_servers=bootstrap,
        database_url=store.database_url,
        topic_prefix=reader.text("topicPrefix", ""),
        partitions=reader.count("partitions", 4),
        task_partitions=reader.count("taskPartitions", 4),
        replication_factor=reader.count("replicationFactor", 1),
        transaction_max_s=reader.milliseconds("transactionMaxMs", 50) / 1000,
        checkpoint_every=reader.count("checkpointEvery", 20_000),
        checkpoint_interval_s=reader.seconds("checkpointIntervalSeconds", 5.0),
        session_timeout_s=reader.seconds("sessionTimeoutSeconds", 10.0),
        agent_driver=reader.choice("agentDriver", ("faust", "direct"), "faust"),
        workers=reader.workers(set(config.plugins)),
    )
    reader.reject_unknown()
    return options


_KNOWN = frozenset({
    "bootstrapServers", "topicPrefix", "partitions", "taskPartitions", "replicationFactor",
    "checkpointEvery", "checkpointIntervalSeconds", "transactionMaxMs", "sessionTimeoutSeconds",
    "workers", "agentDriver",
})


class _SettingsReader:
    def __init__(self, source: str, settings: Mapping[str, Any]) -> None:
        self.source = source
        self.settings = settings

    def error(self, name: str, expected: str) -> ConfigError:
        value = self.settings.get(name)
        return ConfigError(
            f"'{name}' {expected}, got {value!r}", Location(self.source, field=f"runtime.{name}")
        )

    def text(self, name: str, default: str | None) -> str:
        value = self.settings.get(name, default)
        if value is None:
            raise self.error(name, "is required")
        if not isinstance(value, str) or (default is None and not value):
            raise self.error(name, "is a non-empty string")
        return value

    def count(self, name: str, default: int) -> int:
        value = self.settings.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.error(name, "is a positive integer")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.settings.get(name, default)
        if value not in choices:
            raise self.error(name, f"is one of {', '.join(choices)}")
        return str(value)

    def milliseconds(self, name: str, default: int) -> int:
        value = self.settings.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.error(name, "is a non-negative integer of milliseconds")
        return value

    def seconds(self, name: str, default: float) -> float:
        value = self.settings.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.error(name, "is a positive number of seconds")
        return float(value)

    def workers(self, plugins: set[str]) -> dict[str, WorkerOptions]:
        section = self.settings.get("workers", {})
        if not isinstance(section, Mapping):
            raise self.error("workers", "maps component classes to {concurrency, timeoutSeconds}")
        workers: dict[str, WorkerOptions] = {}
        for name, entry in section.items():
            where = f"workers.{name}"
            if name not in plugins:
                raise self.error(where, f"names no plugin (plugins: {', '.join(sorted(plugins))})")
            reader = _SettingsReader(self.source, entry if isinstance(entry, Mapping) else {})
            if not isinstance(entry, Mapping) or set(entry) - {"concurrency", "timeoutSeconds"}:
                raise self.error(where, "is {concurrency: N, timeoutSeconds: S}")
            defaults = WorkerOptions()
            workers[str(name)] = WorkerOptions(
                concurrency=reader.count("concurrency", defaults.concurrency),
                timeout_s=reader.seconds("timeoutSeconds", defaults.timeout_s),
            )
        return workers

    def reject_unknown(self) -> None:
        unknown = sorted(set(self.settings) - _KNOWN)
        if unknown:
            raise ConfigError(
                f"unknown runtime setting '{unknown[0]}'; known: {', '.join(sorted(_KNOWN))}",
                Location(self.source, field=f"runtime.{unknown[0]}"),
            )

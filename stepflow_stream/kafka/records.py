"""Records on the commands and journal topics: key = run id in UTF-8, value = the Avro
encoding of the event (:func:`~stepflow_stream.journal.codec.encode_event`) or command
(:func:`~stepflow_stream.kafka.command_codec.encode_command`).

:func:`partition_for` is the partition Kafka's default partitioner gives a keyed record, so a
reader finds a run's records where any producer with default settings put them.
"""

from __future__ import annotations

import functools

from aiokafka.partitioner import murmur2

from stepflow_stream.core.events import Command, Event
from stepflow_stream.journal.codec import encode_event
from stepflow_stream.kafka.command_codec import encode_command

__all__ = [
    "command_record",
    "journal_record",
    "key_partition",
    "partition_for",
    "run_id_of",
    "run_key",
]


def run_key(run_id: str) -> bytes:
    """The record key of a run's commands and events."""
    return run_id.encode("utf-8")


def run_id_of(key: bytes) -> str:
    """The run id in a record key."""
    return key.decode("utf-8")


def journal_record(event: Event) -> tuple[bytes, bytes]:
    """The key and value of ``event`` on the journal topic."""
    return run_key(event.run_id), encode_event(event)


def command_record(command: Command) -> tuple[bytes, bytes]:
    """The key and value of ``command`` on the commands topic."""
    return run_key(command.run_id), encode_command(command)


def partition_for(run_id: str, partitions: int) -> int:
    """The partition of ``run_id``'s records in a topic of ``partitions`` partitions."""
    return key_partition(run_key(run_id), partitions)


@functools.lru_cache(maxsize=1 << 16)
def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a record keyed ``key``: murmur2 of the
    key, made positive, modulo the count, as the Java client and aiokafka compute it. Cached:
    the pure-Python murmur2 costs microseconds, and a run's key is looked up once per step."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions

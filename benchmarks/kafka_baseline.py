"""The floor under a distributed step: a raw aiokafka produce-to-consume round trip.

One round trip is two hops through the local broker, what one workflow step costs at least on
the distributed runtime (the orchestrator produces a task, a worker consumes it and produces
the result, the orchestrator consumes that):

- "A" produces a record to topic ``X`` (idempotent producer, ``linger_ms=0``);
- "B", a consumer of ``X`` in its own group (``read_committed``), consumes it and produces a
  reply to topic ``Y`` with its own idempotent producer;
- A's consumer of ``Y`` (its own group, ``read_committed``) consumes the reply.

Both sides run in this process on one event loop, one record in flight at a time. Round trips
are timed from A's send to A's receipt of the reply, after a warm-up. The two topics (one
partition each) get a unique prefix ``bench-<uuid>-`` and are deleted afterwards.

``python -m benchmarks.kafka_baseline --bootstrap HOST:PORT`` (default:
``$STEPFLOW_KAFKA_BOOTSTRAP``) prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

WARMUP_ROUND_TRIPS = 100
# How long the broker holds a fetch that finds no record. The broker answers a held fetch as
# soon as a record arrives, so this bounds only the idle polling rate; aiokafka's default is
# 500 ms. Measured here (500 round trips): p50 1.4-1.6 ms with 1, 10, 100 and 500 ms alike.
FETCH_MAX_WAIT_MS = 10
_METADATA_WAIT_S = 10.0


def _percentile(sorted_values: list[float], fraction: float) -> float:
    """Same rule as benchmarks.embedded_side, so the figures compare."""
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


async def _create_topics(bootstrap: str, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(name, 1, 1) for name in topics])
        for topic, code, *_ in response.topic_errors:
            if code != 0:
                raise RuntimeError(f"cannot create topic {topic!r}: error code {code}")
        # A topic just created reaches the broker's metadata a moment after the controller
        # acknowledged it.
        deadline = time.monotonic() + _METADATA_WAIT_S
        while True:
            described: list[dict[str, Any]] = await admin.describe_topics(topics)
            if all(t["error_code"] == 0 and t["partitions"] for t in described):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"topics {topics} not in the broker's metadata: {described}")
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def _delete_topics(bootstrap: str, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


def _consumer(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        # No offsets to commit: an empty group without offsets is dropped by the broker.
        enable_auto_commit=False,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )


def _producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, linger_ms=0)


async def _wait_assigned(consumer: AIOKafkaConsumer) -> None:
    """Until the group coordinator has given ``consumer`` its partition."""
    deadline = time.monotonic() + _METADATA_WAIT_S
    while not consumer.assignment():
        if time.monotonic() > deadline:
            raise RuntimeError("consumer got no partition assigned")
        await asyncio.sleep(0.01)


async def _reply_loop(consumer: AIOKafkaConsumer, producer: AIOKafkaProducer,
                      reply_topic: str) -> None:
    """B: every record consumed from X is produced again, as the reply, to Y."""
    async for record in consumer:
        await producer.send_and_wait(reply_topic, record.value, key=record.key)


async def measure(bootstrap: str, round_trips: int,
                  warmup: int = WARMUP_ROUND_TRIPS) -> dict[str, float]:
    """Sequential round trips X -> B -> Y -> A; p50/p99 (ms) of the measured ones."""
    if round_trips < 1:
        raise ValueError("round_trips must be positive")
    prefix = f"bench-{uuid.uuid4().hex[:12]}-"
    request_topic, reply_topic = f"{prefix}x", f"{prefix}y"
    await _create_topics(bootstrap, [request_topic, reply_topic])
    try:
        a_producer, b_producer = _producer(bootstrap), _producer(bootstrap)
        a_consumer = _consumer(bootstrap, reply_topic, f"{prefix}a")
        b_consumer = _consumer(bootstrap, request_topic, f"{prefix}b")
        for client in (a_producer, b_producer, a_consumer, b_consumer):
            await client.start()
        replier = asyncio.create_task(_reply_loop(b_consumer, b_producer, reply_topic))
        try:
            await _wait_assigned(a_consumer)
            await _wait_assigned(b_consumer)
            latencies = []
            for i in range(warmup + round_trips):
                payload = i.to_bytes(8, "big")
                started = time.perf_counter()
                delivery = await a_producer.send(request_topic, payload, key=b"k")
                reply = await a_consumer.getone()
                elapsed = time.perf_counter() - started
                await delivery
                if reply.value != payload:
                    raise RuntimeError(f"round trip {i}: got {reply.value!r}, sent {payload!r}")
                if i >= warmup:
                    latencies.append(elapsed)
        finally:
            replier.cancel()
            await asyncio.gather(replier, return_exceptions=True)
            for client in (a_consumer, b_consumer, a_producer, b_producer):
                await client.stop()
    finally:
        await _delete_topics(bootstrap, [request_topic, reply_topic])
    latencies.sort()
    return {
        "round_trip_p50_ms": _percentile(latencies, 0.50) * 1e3,
        "round_trip_p99_ms": _percentile(latencies, 0.99) * 1e3,
        "round_trips": float(round_trips),
        "fetch_max_wait_ms": float(FETCH_MAX_WAIT_MS),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bootstrap", default=os.environ.get("STEPFLOW_KAFKA_BOOTSTRAP"),
                        help="the broker (default: $STEPFLOW_KAFKA_BOOTSTRAP)")
    parser.add_argument("--round-trips", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=WARMUP_ROUND_TRIPS)
    args = parser.parse_args()
    if not args.bootstrap:
        parser.error("no broker: pass --bootstrap or set STEPFLOW_KAFKA_BOOTSTRAP "
                     '(eval "$(./stepflow-stream infra up)")')
    figures = asyncio.run(measure(args.bootstrap, args.round_trips, args.warmup))
    json.dump(figures, sys.stdout)


if __name__ == "__main__":
    main()

"""``stepflow-stream lb`` in front of three real component servers that a real DNS server on
loopback resolves one name to."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import httpx
from lb_cluster import ADDRESSES, HEADERS, Cluster, execute, instance_of

INSTANCES = {instance_of(address) for address in ADDRESSES}


async def test_new_requests_spread_evenly_under_load(cluster: Cluster) -> None:
    served: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as client:

        async def worker() -> None:
            for _ in range(10):
                response = await client.post(
                    "/", content=execute("slow", {"seconds": 0.02}), headers=HEADERS
                )
                assert response.status_code == 200, response.text
                assert response.json()["result"]["output"] == {"seconds": 0.02}
                served[response.headers["stepflow-instance-id"]] += 1

        await asyncio.gather(*(worker() for _ in range(24)))
    assert set(served) == INSTANCES
    assert all(60 <= count <= 100 for count in served.values()), served


async def test_callback_answers_reach_the_instance_that_asked(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as client:
        results = await asyncio.gather(*(
            _store(client, {"n": n}, answer_after_s=0.1) for n in range(12)
        ))
    # Three instances took part, so a callback answer sent anywhere else would have got 400.
    assert {instance for instance, _, _ in results} == INSTANCES
    for _, output, _ in results:
        assert output == {"blob_id": "blob-ok"}


async def test_sse_frames_are_streamed_as_they_come(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as client:
        _, output, timing = await _store(client, {"x": 1}, answer_after_s=0.5)
    assert output == {"blob_id": "blob-ok"}
    first_frame, end = timing
    # The component waits for the answer to its first frame, so the frame got through alone.
    assert end - first_frame >= 0.5


async def test_an_unknown_instance_gets_503_instance_gone(cluster: Cluster) -> None:
    answer = {"jsonrpc": "2.0", "id": "cb-1", "result": {"blob_id": "x"}}
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as client:
        response = await client.post(
            "/", content=json.dumps(answer),
            headers={**HEADERS, "Stepflow-Instance-Id": "lb-gone"},
        )
    assert response.status_code == 503
    document = response.json()
    assert document["instanceGone"] is True
    assert document["instanceId"] == "lb-gone"
    assert "lb-gone" in document["error"]
    assert "stepflow-instance-id" not in response.headers


async def test_trace_headers_are_forwarded(cluster: Cluster) -> None:
    # The component server ignores them; what shows they pass is that nothing breaks and that
    # the answer's own headers come back (the instance id). The LB forwards every end-to-end
    # header; the test of the header filter is the request reaching the backend intact.
    trace = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
             "tracestate": "vendor=1", "x-request-id": "req-42"}
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as client:
        response = await client.post(
            "/", content=execute("slow", {"seconds": 0}), headers={**HEADERS, **trace}
        )
    assert response.status_code == 200
    assert response.headers["stepflow-instance-id"] in INSTANCES


async def test_health_and_metrics(cluster: Cluster) -> None:
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as client:
        await client.post("/", content=execute("slow", {"seconds": 0}), headers=HEADERS)
        await client.post("/", content=b"{}", headers={**HEADERS, "Stepflow-Instance-Id": "x"})
        health = (await client.get("/health")).json()
        metrics = await client.get("/metrics")
    assert health["status"] == "healthy"
    assert health["healthyBackends"] == 3
    assert {b["instanceId"] for b in health["backends"]} == INSTANCES
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert "stepflow_lb_backends_healthy 3\n" in text
    assert 'stepflow_lb_errors_total{kind="instance_gone"}' in text
    for address in ADDRESSES:
        labels = f'backend="{address}:{cluster.backend_port}",instance="{instance_of(address)}"'
        assert f"stepflow_lb_backend_in_flight{{{labels}}} 0\n" in text
        assert f"stepflow_lb_requests_total{{{labels}}}" in text


async def test_a_killed_backend_fails_only_what_it_had_been_sent(cluster: Cluster) -> None:
    victim = ADDRESSES[1]
    outcomes: list[tuple[float, int, dict[str, Any]]] = []
    killed_at = 0.0
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as client:

        async def worker() -> None:
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                started = time.monotonic()
                response = await client.post(
                    "/", content=execute("slow", {"seconds": 0.05}), headers=HEADERS
                )
                outcomes.append((started, response.status_code, response.json()))

        async def kill() -> None:
            nonlocal killed_at
            await asyncio.sleep(0.7)
            await asyncio.to_thread(cluster.backends[victim].kill)
            killed_at = time.monotonic()  # dead and reaped: nothing sent later can reach it

        await asyncio.gather(kill(), *(worker() for _ in range(12)))
    failed = [(started, document) for started, status, document in outcomes if status != 200]
    for started, document in failed:
        assert document["upstreamFailed"] is True
        assert document["instanceId"] == instance_of(victim)
        assert started < killed_at
    assert len(failed) <= 12
    assert len(outcomes) > 100
    assert cluster.up_instances() == INSTANCES - {instance_of(victim)}

    # Back on the same address: health checks pick it up and it gets requests again.
    cluster.backends[victim].stop()
    cluster.start_backend(victim, "lb-3-again")
    cluster.wait_for(INSTANCES - {instance_of(victim)} | {"lb-3-again"})
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as client:
        responses = await asyncio.gather(*(
            client.post("/", content=execute("slow", {"seconds": 0.02}), headers=HEADERS)
            for _ in range(30)
        ))
    assert "lb-3-again" in {r.headers["stepflow-instance-id"] for r in responses}
    cluster.backends[victim].stop()  # restore() starts the first instance id again


async def test_discovery_follows_dns(cluster: Cluster) -> None:
    cluster.set_zone(ADDRESSES[:2])
    cluster.wait_for({instance_of(address) for address in ADDRESSES[:2]})
    async with httpx.AsyncClient(base_url=cluster.url, timeout=10) as client:
        responses = await asyncio.gather(*(
            client.post("/", content=execute("slow", {"seconds": 0.01}), headers=HEADERS)
            for _ in range(30)
        ))
    assert instance_of(ADDRESSES[2]) not in {r.headers["stepflow-instance-id"] for r in responses}
    cluster.set_zone(ADDRESSES)
    cluster.wait_for(INSTANCES)


async def _store(
    client: httpx.AsyncClient, input: Any, *, answer_after_s: float
) -> tuple[str, Any, tuple[float, float]]:
    """Execute ``store`` through the load balancer and answer its ``blobs/put`` callback with
    a separate POST carrying the instance id; returns the instance, the output and when the
    first frame and the end arrived."""
    first_frame = 0.0
    final: dict[str, Any] = {}
    async with client.stream(
        "POST", "/", content=execute("store", input), headers=HEADERS
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        instance = response.headers["stepflow-instance-id"]
        async for line in response.aiter_lines():
            if not line:
                continue
            message = json.loads(line.removeprefix("data: "))
            if "method" not in message:
                final = message
                continue
            first_frame = first_frame or time.monotonic()
            assert message["method"] == "blobs/put"
            assert message["params"]["data"] == input
            await asyncio.sleep(answer_after_s)
            answered = await client.post(
                "/", content=json.dumps(
                    {"jsonrpc": "2.0", "id": message["id"], "result": {"blob_id": "blob-ok"}}
                ), headers={**HEADERS, "Stepflow-Instance-Id": instance},
            )
            assert answered.status_code == 202, answered.text
    return instance, final["result"]["output"], (first_frame, time.monotonic())

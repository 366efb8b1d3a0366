"""The load balancer's counters, rendered in Prometheus' text format for ``GET /metrics``."""

from __future__ import annotations

from collections import Counter

from gateway.lb.backends import BackendPool

__all__ = ["Metrics"]


class Metrics:
    """Requests by backend, errors by kind; the gauges are read from the pool at render."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        """Requests answered by a backend, by (backend, instance id)."""
        self.errors: Counter[str] = Counter()
        """Requests the load balancer failed or retried, by kind: ``no_backend``,
        ``instance_gone``, ``connect`` (retried elsewhere), ``upstream`` (failed after sent)."""

    def render(self, pool: BackendPool) -> str:
        lines = [
            "# HELP stepflow_lb_requests_total Requests answered by a backend.",
            "# TYPE stepflow_lb_requests_total counter",
        ]
        for (name, instance), count in sorted(self.requests.items()):
            lines.append(f"stepflow_lb_requests_total{_labels(name, instance)} {count}")
        lines += [
            "# HELP stepflow_lb_errors_total Requests failed or retried by the load balancer.",
            "# TYPE stepflow_lb_errors_total counter",
        ]
        for kind, count in sorted(self.errors.items()):
            lines.append(f'stepflow_lb_errors_total{{kind="{kind}"}} {count}')
        lines += [
            "# HELP stepflow_lb_backend_in_flight Requests in flight per backend.",
            "# TYPE stepflow_lb_backend_in_flight gauge",
        ]
        for backend in pool.backends():
            labels = _labels(backend.name, backend.instance_id)
            lines.append(f"stepflow_lb_backend_in_flight{labels} {backend.in_flight}")
        lines += [
            "# HELP stepflow_lb_backends_healthy Backends that get requests.",
            "# TYPE stepflow_lb_backends_healthy gauge",
            f"stepflow_lb_backends_healthy {len(pool.healthy())}",
        ]
        return "\n".join(lines) + "\n"


def _labels(name: str, instance: str) -> str:
    return f'{{backend="{_escape(name)}",instance="{_escape(instance)}"}}'


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

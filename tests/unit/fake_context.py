"""An in-memory ExecutionContext for plugin unit tests.

Blobs live in a dict; ``evaluate_flow`` does not run a real engine but calls a Python function
given to the fake, which maps ``(flow, input)`` to a FlowResult. That is the seam between a
component and the runtime, so components are tested without a journal or scheduler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from stepflow_stream.core.events import FlowResult
from stepflow_stream.core.jsonvalue import JSON, JSONObject, content_id
from stepflow_stream.errors import ComponentError, ErrorCode

FlowRunner = Callable[[JSONObject, JSON], FlowResult | Awaitable[FlowResult]]


def _no_sub_flows(flow: JSONObject, input: JSON) -> FlowResult:
    raise AssertionError("this test does not expect sub-flows")


class FakeContext:
    """An ExecutionContext whose sub-runs are computed by ``run_flow``."""

    def __init__(
        self,
        run_flow: FlowRunner = _no_sub_flows,
        *,
        attempt: int = 1,
        run_id: str = "run-1",
        step_id: str = "step-1",
        affinity_key: str | None = None,
    ) -> None:
        self.run_flow = run_flow
        self.blobs: dict[str, JSON] = {}
        self.blob_types: dict[str, str] = {}
        self.sub_runs: list[tuple[JSONObject, JSON]] = []
        """Every ``evaluate_flow`` call, in call order."""
        self._run_id = run_id
        self._step_id = step_id
        self._attempt = attempt
        self._affinity_key = affinity_key

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def step_id(self) -> str:
        return self._step_id

    @property
    def attempt(self) -> int:
        return self._attempt

    @property
    def task_id(self) -> str:
        return f"{self._run_id}/{self._step_id}/{self._attempt}"

    @property
    def affinity_key(self) -> str | None:
        return self._affinity_key

    async def put_blob(self, data: JSON, blob_type: str = "data") -> str:
        blob_id = content_id(data)
        self.blobs[blob_id] = data
        self.blob_types[blob_id] = blob_type
        return blob_id

    async def get_blob(self, blob_id: str) -> JSON:
        if blob_id not in self.blobs:
            raise ComponentError(ErrorCode.INVALID_INPUT, f"no blob {blob_id}", retryable=False)
        return self.blobs[blob_id]

    async def evaluate_flow(self, flow: JSONObject, input: JSON) -> tuple[FlowResult, str]:
        run_id = f"{self._run_id}/sub-{len(self.sub_runs)}"
        self.sub_runs.append((flow, input))
        outcome = self.run_flow(flow, input)
        if isinstance(outcome, FlowResult):
            return outcome, run_id
        return await outcome, run_id

"""What both runtimes' task contexts share: the task's ids and blobs in a blob store."""

from __future__ import annotations

from stepflow_stream.core.events import StepStarted
from stepflow_stream.core.jsonvalue import JSON
from stepflow_stream.errors import ComponentError, ErrorCode
from stepflow_stream.journal.base import BlobStore

__all__ = ["BlobTaskContext"]


class BlobTaskContext:
    """The part of an :class:`~stepflow_stream.plugins.base.ExecutionContext` that the
    ``StepStarted`` of a task and a blob store answer; subclasses add ``evaluate_flow``."""

    __slots__ = ("_blobs", "_event")

    def __init__(self, event: StepStarted, blobs: BlobStore) -> None:
        self._event = event
        self._blobs = blobs

    @property
    def run_id(self) -> str:
        return self._event.run_id

    @property
    def step_id(self) -> str:
        return self._event.step_id

    @property
    def attempt(self) -> int:
        return self._event.attempt

    @property
    def task_id(self) -> str:
        return self._event.task_id

    @property
    def affinity_key(self) -> str | None:
        return self._event.affinity

    async def put_blob(self, data: JSON, blob_type: str = "data") -> str:
        return await self._blobs.put(data, blob_type)

    async def get_blob(self, blob_id: str) -> JSON:
        try:
            return await self._blobs.get(blob_id)
        except KeyError:
            raise ComponentError(ErrorCode.INVALID_INPUT, f"no blob with id '{blob_id}'",
                                 retryable=False) from None

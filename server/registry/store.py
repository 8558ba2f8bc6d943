"""The registry contract both backends implement, and the in-process event hub they publish to."""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import AsyncIterator

from server.errors import NotFoundError, ServiceUnavailableError
from server.registry.models import ChangeEvent, JobRecord, TargetRecord


async def cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    """Stop a background task and wait until it has really stopped.

    One ``cancel()`` is not always enough: on Python 3.11 ``asyncio.wait_for`` swallows a cancellation that lands
    just as its inner await completes (a change event arriving during shutdown), and the task carries on. So the
    cancellation is repeated until the task is done.
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError):
        task.result()


class RegistryUnavailable(ServiceUnavailableError):
    """The backing store cannot be reached (a 503 to admin callers; guarded requests follow the fail policy)."""


class EventHub:
    """Fan-out of change events to every subscriber in this process."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[ChangeEvent]] = set()

    def publish(self, event: ChangeEvent) -> None:
        for queue in self._queues:
            queue.put_nowait(event)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[ChangeEvent]]:
        queue: asyncio.Queue[ChangeEvent] = asyncio.Queue()
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)


class TargetStore(abc.ABC):
    """Targets and jobs, with change events. ``create`` and ``replace`` enforce unique names (409)."""

    def __init__(self) -> None:
        self.hub = EventHub()

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect and start listening for changes made elsewhere."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        pass

    @abc.abstractmethod
    async def create(self, record: TargetRecord) -> TargetRecord: ...

    @abc.abstractmethod
    async def get(self, target_id: str) -> TargetRecord | None: ...

    @abc.abstractmethod
    async def list(self) -> list[TargetRecord]: ...

    @abc.abstractmethod
    async def replace(self, record: TargetRecord) -> TargetRecord:
        """Store ``record`` as the next version of its target; the stored version must equal record.version."""

    @abc.abstractmethod
    async def delete(self, target_id: str) -> None: ...

    @abc.abstractmethod
    async def put_job(self, job: JobRecord) -> None: ...

    @abc.abstractmethod
    async def get_job(self, job_id: str) -> JobRecord | None: ...

    @abc.abstractmethod
    async def ping(self) -> bool: ...

    # ---- build queue (jobs.mode=queue; only the shared backend has one) --------------------------------------------
    async def enqueue_job(self, job_id: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no build queue; use the Redis registry")

    async def claim_job(self, timeout_s: float) -> str | None:
        """Move the oldest queued job to the running list and return it (None after ``timeout_s``)."""
        raise NotImplementedError(f"{type(self).__name__} has no build queue; use the Redis registry")

    async def finish_job(self, job_id: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no build queue; use the Redis registry")

    async def requeue_running(self) -> int:
        """Put jobs a dead worker had claimed back in the queue (called when a worker starts)."""
        raise NotImplementedError(f"{type(self).__name__} has no build queue; use the Redis registry")

    async def require(self, target_id: str) -> TargetRecord:
        record = await self.get(target_id)
        if record is None:
            raise NotFoundError(f"no forget target with id '{target_id}'", param="id")
        return record

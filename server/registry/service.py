"""Admin operations on forget targets, and the job runner that builds each target's artifacts.

A target moves ``pending -> training -> active`` (or ``failed`` with a reason) as its build job runs; editing what
a target is (name, examples, methods...) starts a new build, switching it off or on does not lose anything.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from server.errors import ConflictError, NotFoundError
from server.registry.artifacts import ArtifactStore
from server.registry.cache import TargetCache
from server.registry.documents import put_documents
from server.registry.models import (
    BuildResult,
    ChangeEvent,
    JobRecord,
    Progress,
    TargetCreate,
    TargetRecord,
    TargetUpdate,
)
from server.registry.store import TargetStore

logger = logging.getLogger(__name__)


# Builds a target's artifacts (detector heads, indexes, adapters...). Registered by the app; see classifiers/.
Builder = Callable[[TargetRecord, Progress], Awaitable[BuildResult]]


class TargetService:
    def __init__(self, store: TargetStore, cache: TargetCache, builder: Builder, artifacts: ArtifactStore,
                 queue: bool = False) -> None:
        self.store = store
        self.cache = cache
        self.builder = builder
        # where a target's documents go (the record keeps their digest): the builders read them from there
        self.artifacts = artifacts
        # Queue builds for `ugw worker` processes instead of running them here (jobs.mode=queue).
        self.queue = queue
        self._tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- CRUD ------------------------------------------------------------------------------------------------------
    async def create(self, body: TargetCreate) -> TargetRecord:
        record = TargetRecord(**body.model_dump(exclude={"documents"}),
                              documents=put_documents(self.artifacts, body.documents))
        job = JobRecord(target_id=record.id)
        record.job_id = job.id
        await self.store.put_job(job)
        await self.store.create(record)
        await self._seen(record)
        await self._launch(job)
        return record

    async def update(self, target_id: str, body: TargetUpdate) -> TargetRecord:
        """Apply the edit to the current record; a build job's status write in between is re-read, not a 409."""
        for attempt in range(5):
            record = await self.store.require(target_id)
            changes = body.model_dump(exclude_none=True)
            enabled = changes.pop("enabled", None)
            if body.documents is not None:
                changes["documents"] = put_documents(self.artifacts, body.documents)
            if changes:  # re-validate the edited fields through the record model
                record = TargetRecord.model_validate({**record.model_dump(), **changes})
            job: JobRecord | None = None
            if body.retrains() or (enabled and not record.enabled):
                job = JobRecord(target_id=record.id)
                record.job_id = job.id
                record.status, record.status_reason = "pending", None
            if enabled is not None:
                record.enabled = enabled
                if not enabled:
                    record.status, record.status_reason = "disabled", None
                    job = None
            try:
                new = await self.store.replace(record)
            except ConflictError:
                if attempt == 4:
                    raise
                continue
            if job is not None:
                await self.store.put_job(job)
            await self._seen(new)
            if job is not None:
                await self._launch(job)
            return new
        raise AssertionError("unreachable")

    async def delete(self, target_id: str) -> None:
        await self.store.delete(target_id)
        await self.cache.apply(ChangeEvent(op="delete", target_id=target_id))

    async def _seen(self, record: TargetRecord) -> None:
        """Read-your-writes: this replica enforces its own change before the write's response goes out."""
        await self.cache.apply(ChangeEvent(op="upsert", target_id=record.id, version=record.version))

    async def job(self, job_id: str) -> JobRecord:
        job = await self.store.get_job(job_id)
        if job is None:
            raise NotFoundError(f"no job with id '{job_id}'", param="id")
        return job

    # ---- jobs ------------------------------------------------------------------------------------------------------
    async def _launch(self, job: JobRecord) -> None:
        if self.queue:
            await self.store.enqueue_job(job.id)
            return
        task = asyncio.create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run_queued(self, job_id: str) -> None:
        """A worker's turn at one queued job; one that already ended (a requeue after a crash) is left alone."""
        job = await self.store.get_job(job_id)
        if job is None or job.state in ("succeeded", "failed", "superseded"):
            return
        await self._run(job)

    async def _set_target(self, target_id: str, job_id: str, **fields: object) -> TargetRecord | None:
        """Apply a job's outcome unless the target moved on (deleted, disabled, or a newer job owns it)."""
        for _ in range(5):
            record = await self.store.get(target_id)
            if record is None or record.job_id != job_id or not record.enabled:
                return None
            try:
                new = await self.store.replace(record.model_copy(update=fields))
                await self._seen(new)
                return new
            except ConflictError:  # a concurrent edit: re-read and try again
                continue
        return None

    async def _run(self, job: JobRecord) -> None:
        started = time.time()

        async def progress(fraction: float, message: str) -> None:
            job.progress, job.message, job.updated_at = min(max(fraction, 0.0), 1.0), message, time.time()
            await self.store.put_job(job)

        try:
            record = await self._set_target(job.target_id, job.id, status="training", status_reason=None)
            if record is None:
                job.state, job.message = "superseded", "the target was edited, disabled or deleted before it started"
                await self.store.put_job(job)
                return
            job.state = "running"
            await progress(0.0, "building")
            result = await self.builder(record, progress)
            done = await self._set_target(job.target_id, job.id, status="active", artifacts=result.artifacts,
                                          thresholds=result.thresholds)
            if done is None:  # a newer edit owns the target now; its own job publishes the result
                job.state, job.message, job.updated_at = "superseded", "the target changed during the build", \
                    time.time()
                await self.store.put_job(job)
                return
            job.state = "succeeded"
            await progress(1.0, f"done in {time.time() - started:.1f}s")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("build job %s for target %s failed", job.id, job.target_id)
            job.state, job.error, job.updated_at = "failed", str(exc), time.time()
            await self.store.put_job(job)
            try:
                await self._set_target(job.target_id, job.id, status="failed", status_reason=str(exc))
            except Exception:  # the store itself may be what failed
                logger.exception("could not mark target %s failed", job.target_id)

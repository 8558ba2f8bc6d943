"""The build worker (`ugw worker`): claims queued build jobs from the shared registry and runs them one at a time.

Gateways in ``jobs.mode=queue`` only queue builds, so that a GPU-heavy O3 fit never competes with serving. A claimed
job sits in Redis' running list until it ends; a worker that starts puts whatever is left there (its predecessor
died mid-build) back in the queue, so no registered target is left pending for good. One worker Deployment with
one replica is the supported shape: two workers starting together would each requeue the other's running job.
"""

from __future__ import annotations

import asyncio
import logging

from server.registry.service import TargetService
from server.registry.store import RegistryUnavailable, TargetStore, cancel_and_wait

logger = logging.getLogger(__name__)


class BuildWorker:
    def __init__(self, store: TargetStore, targets: TargetService, poll_s: float = 2.0) -> None:
        self.store = store
        self.targets = targets
        self.poll_s = poll_s
        self.current: str | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        await cancel_and_wait(self._task)

    async def _loop(self) -> None:
        recovered = False
        while True:
            try:
                if not recovered:
                    moved = await self.store.requeue_running()
                    if moved:
                        logger.warning("worker: requeued %d build(s) left running by a stopped worker", moved)
                    recovered = True
                job_id = await self.store.claim_job(self.poll_s)
            except RegistryUnavailable as exc:
                logger.warning("worker: registry unreachable (%s); retrying", exc)
                await asyncio.sleep(1.0)
                continue
            if job_id is None:
                continue
            self.current = job_id
            logger.info("worker: building job %s", job_id)
            try:
                await self.targets.run_queued(job_id)
            except RegistryUnavailable as exc:  # stays in the running list; requeued when a worker starts
                logger.warning("worker: registry lost during job %s (%s)", job_id, exc)
                continue
            finally:
                self.current = None
            try:
                await self.store.finish_job(job_id)
            except RegistryUnavailable as exc:
                logger.warning("worker: could not mark job %s finished (%s)", job_id, exc)

"""Build jobs: progress is recorded, and a failing build leaves the target 'failed' with the reason."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from server.registry.artifacts import ArtifactStore
from server.registry.cache import TargetCache
from server.registry.file_store import FileTargetStore
from server.registry.models import (
    Artifacts,
    BuildResult,
    Progress,
    TargetCreate,
    TargetRecord,
    TargetUpdate,
    Thresholds,
)
from server.registry.service import Builder, TargetService


@contextlib.asynccontextmanager
async def running_service(root: Path, builder: Builder) -> AsyncIterator[tuple[TargetService, FileTargetStore]]:
    store = FileTargetStore(root)
    await store.start()
    cache = TargetCache(store)
    await cache.start()
    service = TargetService(store, cache, builder, ArtifactStore(root / "artifacts"))
    try:
        yield service, store
    finally:
        await service.close()
        await cache.close()
        await store.close()


async def _settle(store: FileTargetStore, target_id: str) -> TargetRecord:
    for _ in range(200):
        record = await store.get(target_id)
        assert record is not None
        if record.status in ("active", "failed"):
            return record
        await asyncio.sleep(0.01)
    raise TimeoutError


def test_failed_build_marks_target_failed_with_reason(tmp_path: Path) -> None:
    async def broken(record: TargetRecord, progress: Progress) -> BuildResult:
        await progress(0.3, "halfway")
        raise RuntimeError("encoder weights missing")

    async def run() -> None:
        async with running_service(tmp_path, broken) as (service, store):
            record = await service.create(TargetCreate(name="Ada Lovelace"))
            settled = await _settle(store, record.id)
            assert settled.status == "failed" and "encoder weights missing" in (settled.status_reason or "")
            job = await service.job(record.job_id or "")
            assert job.state == "failed" and job.error == "encoder weights missing" and job.progress == 0.3
            assert service.cache.active() == []

    asyncio.run(run())


def test_edit_during_a_build_wins_over_the_stale_job(tmp_path: Path) -> None:
    gate = asyncio.Event()

    async def slow(record: TargetRecord, progress: Progress) -> BuildResult:
        await gate.wait()
        return BuildResult(artifacts=Artifacts(terms="0" * 64),
                           thresholds=Thresholds(retrieval_threshold=float(len(record.name))))

    async def run() -> None:
        async with running_service(tmp_path, slow) as (service, store):
            record = await service.create(TargetCreate(name="Ada"))
            await asyncio.sleep(0.05)
            edited = await service.update(record.id, TargetUpdate(name="Ada Lovelace"))
            assert edited.job_id != record.job_id
            gate.set()
            settled = await _settle(store, record.id)
            # only the newest job may publish its result: thresholds come from the edited name
            assert settled.name == "Ada Lovelace" and settled.thresholds.retrieval_threshold == 12.0
            assert (await service.job(record.job_id or "")).state == "superseded"

    asyncio.run(run())

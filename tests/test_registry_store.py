"""The store contract, on both backends: CRUD, unique names, optimistic versions, jobs, change events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from server.errors import ConflictError, NotFoundError
from server.registry.cache import FailPolicy, TargetCache
from server.registry.file_store import FileTargetStore
from server.registry.models import JobRecord, TargetRecord
from server.registry.redis_store import RedisTargetStore
from server.registry.store import RegistryUnavailable, TargetStore
from tests.redis_server import RedisServer


@pytest.fixture(params=["file", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], TargetStore]:
    if request.param == "file":
        return lambda: FileTargetStore(tmp_path / "registry", poll_interval_s=0.05)
    redis_server: RedisServer = request.getfixturevalue("redis_server")
    prefix = f"t{abs(hash(tmp_path)) % 10**8}"
    return lambda: RedisTargetStore(redis_server.url, prefix=prefix)


def test_crud_names_versions_and_jobs(make_store: Callable[[], TargetStore]) -> None:
    async def run() -> None:
        store = make_store()
        await store.start()
        try:
            a = await store.create(TargetRecord(name="Harry Potter", aliases=["The Boy Who Lived"]))
            assert (await store.get(a.id)) == a
            with pytest.raises(ConflictError):
                await store.create(TargetRecord(name="harry potter"))
            b = await store.create(TargetRecord(name="Stephen King"))
            assert [r.name for r in await store.list()] == ["Harry Potter", "Stephen King"]

            a2 = await store.replace(a.model_copy(update={"description": "a wizard"}))
            assert a2.version == a.version + 1 and a2.description == "a wizard"
            with pytest.raises(ConflictError):  # stale version
                await store.replace(a.model_copy(update={"description": "stale"}))
            with pytest.raises(ConflictError):  # renaming onto another target's name
                await store.replace(b.model_copy(update={"name": "HARRY POTTER"}))
            renamed = await store.replace(a2.model_copy(update={"name": "Harry J. Potter"}))
            await store.create(TargetRecord(name="Harry Potter"))  # the old name is free again
            assert renamed.version == a2.version + 1

            await store.delete(b.id)
            assert await store.get(b.id) is None
            with pytest.raises(NotFoundError):
                await store.delete(b.id)
            with pytest.raises(NotFoundError):
                await store.replace(b)

            job = JobRecord(target_id=a.id, progress=0.5)
            await store.put_job(job)
            assert (await store.get_job(job.id)) == job
            assert await store.get_job("job_missing") is None
            assert await store.ping()
        finally:
            await store.close()

    asyncio.run(run())


def test_a_second_store_on_the_same_backend_sees_changes(make_store: Callable[[], TargetStore]) -> None:
    async def run() -> None:
        writer, reader = make_store(), make_store()
        await writer.start()
        await reader.start()
        try:
            async with reader.hub.subscribe() as events:
                await asyncio.sleep(0.2)  # let the reader's listener subscribe
                record = await writer.create(TargetRecord(name="Taylor Swift"))
                event = await asyncio.wait_for(events.get(), timeout=2)
                assert event.op in ("upsert", "resync")
                assert (await reader.get(record.id)) is not None
        finally:
            await writer.close()
            await reader.close()

    asyncio.run(run())


def test_redis_killed_and_restarted_loses_no_target(own_redis: RedisServer) -> None:
    redis_proc = own_redis

    async def run() -> None:
        store = RedisTargetStore(redis_proc.url, prefix="durable", reconnect_delay_s=0.1)
        await store.start()
        try:
            names = [f"Person {i}" for i in range(20)]
            ids = [(await store.create(TargetRecord(name=n))).id for n in names]
            async with store.hub.subscribe() as events:
                redis_proc.kill()
                with pytest.raises(RegistryUnavailable):
                    await store.list()
                redis_proc.start()
                # the listener reconnects on its own and asks every cache to resync
                async def next_resync() -> None:
                    while (await events.get()).op != "resync":
                        pass

                await asyncio.wait_for(next_resync(), timeout=10)
            assert [r.id for r in await store.list()] == ids
        finally:
            await store.close()

    old_port = redis_proc.port
    asyncio.run(run())
    assert redis_proc.port == old_port


@pytest.mark.parametrize("policy", ["closed", "last_known"])
def test_cache_fail_policy_while_redis_is_down(policy: FailPolicy, own_redis: RedisServer) -> None:
    """Closed: the replica refuses to vouch for a stale view (503). last_known: it keeps its targets. Both recover."""
    redis_proc = own_redis

    async def run() -> None:
        store = RedisTargetStore(redis_proc.url, prefix="policy", reconnect_delay_s=0.1)
        await store.start()
        cache = TargetCache(store, on_unavailable=policy)
        await cache.start()
        try:
            await store.create(TargetRecord(name="Harry Potter", status="active"))
            await wait_until(lambda: len(cache.active()) == 1)
            cache.check_current()
            redis_proc.kill()
            await wait_until(lambda: not cache.synced)
            if policy == "closed":
                with pytest.raises(RegistryUnavailable) as refused:
                    cache.check_current()
                assert refused.value.status_code == 503 and "registry is unreachable" in refused.value.message
            else:
                cache.check_current()
            assert [t.name for t in cache.active()] == ["Harry Potter"]  # the last known view is kept either way
            redis_proc.start()
            await wait_until(lambda: cache.synced)
            cache.check_current()
        finally:
            await cache.close()
            await store.close()

    async def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not condition():
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)

    asyncio.run(run())


def test_build_queue_is_fifo_and_a_dead_workers_jobs_come_back(redis_server: RedisServer) -> None:
    async def run() -> None:
        store = RedisTargetStore(redis_server.url, prefix="queue")
        try:
            for job_id in ("j1", "j2", "j3"):
                await store.enqueue_job(job_id)
            assert await store.claim_job(1) == "j1"
            assert await store.claim_job(1) == "j2"
            await store.finish_job("j1")  # j2 stays claimed: its worker "dies" here
            assert await store.requeue_running() == 1
            # the interrupted build goes back to the front of the queue
            assert [await store.claim_job(1) for _ in range(2)] == ["j2", "j3"]
            await store.finish_job("j3")
            await store.finish_job("j2")
            assert await store.claim_job(0.1) is None
            assert await store.requeue_running() == 0
        finally:
            await store.close()

    asyncio.run(run())

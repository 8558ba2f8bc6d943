"""The reference engine's worker owns torch's intra-op threads; long jobs get theirs in a thread that ends."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from server.engines.threads import engine_threads, in_own_thread
from tests.live import LiveServer


def test_own_thread_runs_with_its_threads_and_hands_back_results_and_errors() -> None:
    async def go() -> None:
        assert await in_own_thread(torch.get_num_threads, threads=2) == 2
        assert await in_own_thread(lambda a, b: a + b, 2, 3, threads=1) == 5
        with pytest.raises(ValueError, match="bad"):
            await in_own_thread(lambda: (_ for _ in ()).throw(ValueError("bad")), threads=1)
    asyncio.run(go())
    assert engine_threads() >= 1


def test_threads_started_while_a_long_job_runs_keep_the_process_default() -> None:
    def fresh_thread_count() -> int:
        seen: list[int] = []
        worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        worker.start()
        worker.join()
        return seen[0]

    async def go() -> tuple[int, int, int]:
        before = fresh_thread_count()
        started, release = threading.Event(), threading.Event()

        def job() -> int:
            started.set()
            release.wait(10)
            return torch.get_num_threads()

        task = asyncio.ensure_future(in_own_thread(job, threads=before + 1))
        await asyncio.to_thread(started.wait, 10)
        during = fresh_thread_count()  # the job still holds its claim here
        release.set()
        return before, during, await task

    before, during, claimed = asyncio.run(go())
    assert during == before
    assert claimed == before + 1


def test_engine_worker_alone_runs_multi_threaded(hf_server: LiveServer) -> None:
    async def probe() -> tuple[int, int]:
        # the server's event-loop thread (detectors, ECO lookups) and a thread new to torch both get one
        fresh = await asyncio.to_thread(torch.get_num_threads)
        return torch.get_num_threads(), fresh
    assert hf_server.call(probe()) == (1, 1)
    assert hf_server.engine.threads == engine_threads()  # type: ignore[attr-defined]

"""Which threads of the process run torch on several cores when the reference engine serves in it.

torch's CPU ops run on OpenMP (libgomp). Each thread that runs a multi-threaded op gets a team of helper threads
that lives as long as that thread does, and libgomp lets idle helpers spin only while the process has no more of
them than cores; past that they sleep at once, and every parallel region pays to wake them. The reference engine
decodes on its own worker thread while the event loop runs detectors and ECO's embedding lookups and pool threads
build artifacts: once any of those ran a two-thread op, each decode step of the engine got 34% slower, and 65%
with a LoRA row in the batch (many small ops; measured with ``loadtest decode-cost --engine hf``).

So the engine's worker owns the intra-op threads and every other thread runs torch on one. Long jobs that want the
cores too (adapter training) run in a thread of their own that ends with them, which frees its team.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


# torch's own choice (physical cores, or OMP_NUM_THREADS), read before anything here lowers it
_TORCH_DEFAULT = torch.get_num_threads()


def engine_threads() -> int:
    """The intra-op threads for the engine (and long jobs): ``OMP_NUM_THREADS``, else torch's default."""
    configured = os.environ.get("OMP_NUM_THREADS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return max(1, _TORCH_DEFAULT)


def others_single_threaded() -> None:
    """One intra-op thread for the calling thread and for every thread that has not run torch yet.

    torch keeps one process-wide default that a thread adopts on its first op, and ``set_num_threads`` rewrites it
    from whichever thread calls it; so this runs again after the engine's worker has claimed its own count.
    """
    torch.set_num_threads(1)


def claim_threads(threads: int) -> int:
    """Give the calling thread ``threads`` intra-op threads; returns the process default it had adopted.

    torch applies that default lazily, on a thread's first op, so it is applied first here: otherwise the first op
    would replace ``threads`` with it.
    """
    default = torch.get_num_threads()
    torch.set_num_threads(threads)
    return default


async def in_own_thread(fn: Callable[..., T], *args: object, threads: int) -> T:
    """``fn(*args)`` on a fresh thread with ``threads`` intra-op threads; its OpenMP team ends with it."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T) -> None:
        if not done.cancelled():
            done.set_result(result)

    def fail(error: BaseException) -> None:
        if not done.cancelled():
            done.set_exception(error)

    def run() -> None:
        default = claim_threads(threads)
        # the claim rewrote the process-wide default that threads adopt on their first op: while this job runs,
        # a pool thread new to torch would take ``threads`` too. Only another thread can put it back without
        # undoing this one's claim, so the loop does it, and the job waits for that before it starts.
        restored = threading.Event()

        def restore() -> None:
            torch.set_num_threads(default)
            restored.set()

        loop.call_soon_threadsafe(restore)
        restored.wait()
        try:
            result = fn(*args)
        except BaseException as exc:  # handed to the awaiting task
            loop.call_soon_threadsafe(fail, exc)
        else:
            loop.call_soon_threadsafe(settle, result)

    threading.Thread(target=run, name=getattr(fn, "__name__", "job"), daemon=True).start()
    return await done

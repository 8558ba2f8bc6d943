"""Detection off the event loop: the prompts that arrive while an encoder pass runs share the next one.

An encoder pass over one prompt takes milliseconds of CPU; run on the asyncio loop it would stall every other
request's streaming for that long, and run per request in threads it would cost one forward pass each. Requests
here queue their prompt and await a future; one worker at a time takes everything queued (up to ``max_batch``)
and runs the whole pipeline on it in a thread, one ``encode_layers`` call for the batch. A pipeline without
encoder detectors (lexical alone: microseconds) answers on the loop directly.
"""

from __future__ import annotations

import asyncio

from classifiers.base import Detection
from classifiers.pipeline import DetectionPipeline


class DetectionBatcher:
    def __init__(self, pipeline: DetectionPipeline, max_batch: int = 64) -> None:
        self.pipeline = pipeline
        self.max_batch = max_batch
        self._queue: list[tuple[str, asyncio.Future[list[Detection]]]] = []
        self._worker: asyncio.Task[None] | None = None
        # batch sizes run so far (tests and benchmarks read how much sharing happened)
        self.batches: list[int] = []

    async def detect(self, prompt: str) -> list[Detection]:
        if not self.pipeline.uses_encoder:
            return self.pipeline.detect(prompt)
        future: asyncio.Future[list[Detection]] = asyncio.get_running_loop().create_future()
        self._queue.append((prompt, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
            self.batches.append(len(batch))
            try:
                results = await asyncio.to_thread(self.pipeline.detect_many, [p for p, _ in batch])
            except Exception as exc:  # every waiting request gets the error (a 5xx is not hidden as "no target")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), found in zip(batch, results, strict=True):
                if not future.done():  # a request that went away (client disconnect) left a cancelled future
                    future.set_result(found)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

"""The transformers reference engine: simple and exact, one worker thread running a continuous batch.

It exists to cross-check vLLM (differential tests), to start in seconds and to run the evaluation harness on
machines without vLLM; batching (see ``hf_batch``) is what makes the latter affordable. Requests join the running
batch at the next decode step, up to ``max_num_seqs``. It has no paged KV cache: the batch's cache is one padded
tensor per layer, copied when requests join.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import queue
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import torch
from transformers import PreTrainedModel

from server.engines.base import Engine, EngineOutput, EngineRequest, SamplingOptions
from server.engines.detokenize import IncrementalDetokenizer
from server.engines.hf_batch import BatchRow, HFBatch, Job
from server.engines.lora import LoRAAdapter
from server.engines.row_lora import RowLoRA
from server.engines.sampling import TokenSampler
from server.engines.threads import claim_threads, engine_threads, others_single_threaded
from server.errors import InvalidRequestError, ServiceUnavailableError
from server.settings import EngineSettings

logger = logging.getLogger(__name__)

# How long the worker waits for one more request before it starts a batch (a prefill of the bundled model takes
# tens of milliseconds, so this costs a lone request little and keeps bursts in one batch).
BATCH_WINDOW_S = 0.005
# Upper prompt lengths of the batching lanes (see ``_run``), and how often a running lane admits newcomers.
LANE_BOUNDS = (64, 160, 400)
ADMIT_EVERY = 4


def _lane(prompt_tokens: int) -> int:
    return bisect.bisect_left(LANE_BOUNDS, prompt_tokens)


class HFEngine(Engine):
    kind = "hf"

    def __init__(self, settings: EngineSettings, model_path: Path, work_dir: Path) -> None:
        super().__init__(settings, model_path, work_dir)
        self.model: PreTrainedModel | None = None
        self._adapters: dict[str, LoRAAdapter] = {}
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._eos_ids: set[int] = set()
        self.threads = 0  # the worker's intra-op threads, once it runs
        self._vocab = 0  # rows of the LM head, read once the model is loaded
        self._running = 0
        # the most requests one batch has held: lets tests and operators see that batching happens
        self.largest_batch = 0
        self._lanes: list[HFBatch] = []
        # module path -> module, for applying LoRA deltas by the adapter's module names
        self._modules: dict[str, torch.nn.Module] = {}

    async def start(self) -> None:
        from transformers import AutoModelForCausalLM, GenerationConfig

        dtype = getattr(torch, self.settings.dtype)
        threads = engine_threads()
        others_single_threaded()  # the worker alone runs torch on several cores: see server/engines/threads.py
        self.model = await asyncio.to_thread(AutoModelForCausalLM.from_pretrained, self.model_path, dtype=dtype)
        self.model.eval()
        self._modules = dict(self.model.named_modules())
        self._vocab = int(self.model.get_output_embeddings().weight.shape[0])
        eos: set[int] = set()
        if self.tokenizer.eos_token_id is not None:
            eos.add(int(self.tokenizer.eos_token_id))
        with contextlib.suppress(OSError):
            gen_eos = GenerationConfig.from_pretrained(self.model_path).eos_token_id
            eos.update([gen_eos] if isinstance(gen_eos, int) else (gen_eos or []))
        self._eos_ids = eos
        ready = threading.Event()
        self._worker = threading.Thread(target=self._run, args=(threads, ready), name="hf-engine", daemon=True)
        self._worker.start()
        if not await asyncio.to_thread(ready.wait, 60):
            raise RuntimeError("the reference engine's worker did not start")
        others_single_threaded()  # the worker's claim rewrote torch's process-wide default

    async def shutdown(self) -> None:
        if self._worker is not None:
            self._jobs.put(None)
            await asyncio.to_thread(self._worker.join, 10)
            self._worker = None

    async def check_health(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    @property
    def reused_prefix_tokens(self) -> int:
        """Prompt tokens not prefilled again because requests admitted together shared them."""
        return sum(lane.reused_prefix_tokens for lane in self._lanes)

    def num_running(self) -> int:
        return self._jobs.qsize() + self._running

    # ---- LoRA ------------------------------------------------------------------------------------------------------
    async def load_lora(self, name: str, path: Path) -> None:
        adapter = await asyncio.to_thread(LoRAAdapter.load, path)
        modules = self._modules
        missing = [m for m in adapter.weights if m not in modules]
        if missing:
            raise InvalidRequestError(f"LoRA adapter '{name}' targets modules this model does not have: {missing[:3]}")
        for module_name, (a, b) in adapter.weights.items():
            linear = modules[module_name]
            if not isinstance(linear, torch.nn.Linear) or a.shape[1] != linear.in_features or \
                    b.shape[0] != linear.out_features:
                raise InvalidRequestError(f"LoRA adapter '{name}' does not fit module {module_name}")
        self._adapters[name] = adapter

    async def unload_lora(self, name: str) -> None:
        self._adapters.pop(name, None)

    def loaded_loras(self) -> set[str]:
        return set(self._adapters)

    # ---- inference -------------------------------------------------------------------------------------------------
    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        if self._worker is None or not self._worker.is_alive():
            raise ServiceUnavailableError("the engine is not running")
        self.validate_request(request)
        job = Job(request=request, loop=asyncio.get_running_loop(), outputs=asyncio.Queue())
        self._jobs.put(job)
        try:
            while True:
                item = await job.outputs.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finished:
                    return
        finally:
            job.cancelled.set()

    def _next_jobs(self, idle: bool, room: int) -> tuple[list[Job], bool]:
        """Jobs from the queue (at most ``room``), and whether shutdown was asked for.

        An idle worker blocks for the first request, then waits briefly for the rest of a burst; a busy one takes
        only what is already queued, so the running rows are never held up.
        """
        jobs: list[Job | None] = []
        if idle:
            jobs.append(self._jobs.get())
        while len(jobs) < room and jobs[-1:] != [None]:
            try:
                # requests sent together reach the queue a little apart
                jobs.append(self._jobs.get(timeout=BATCH_WINDOW_S) if idle else self._jobs.get_nowait())
            except queue.Empty:
                break
        return [j for j in jobs if j is not None], None in jobs

    def _run(self, threads: int, ready: threading.Event) -> None:
        """One batch per lane of prompt lengths, each decoded one step per turn.

        A batch's KV cache is as wide as its longest row, and every row pays for that width at every step (the cache
        is copied as it grows). Lanes keep a 500-token prompt from widening a hundred 40-token ones. A lane admits
        newcomers when it is empty or every ``ADMIT_EVERY`` steps, since each admission copies its cache.
        """
        assert self.model is not None
        claim_threads(threads)
        self.threads = torch.get_num_threads()
        ready.set()
        lora = RowLoRA(self._modules, self._adapters)
        lanes = self._lanes = [HFBatch(self.model, self._row, lora, self._eos_ids, self.settings.max_model_len)
                               for _ in range(len(LANE_BOUNDS) + 1)]
        waiting: list[Job] = []
        stopping = False
        while not stopping or any(len(lane) for lane in lanes):
            running = sum(len(lane) for lane in lanes)
            if not stopping:
                jobs, stopping = self._next_jobs(not running and not waiting,
                                                 self.settings.max_num_seqs - running - len(waiting))
                waiting += jobs
            waiting = [j for j in waiting if not j.cancelled.is_set()]
            for i, lane in enumerate(lanes):
                mine = [j for j in waiting if _lane(j.request.num_prompt_tokens) == i]
                if mine and (not len(lane) or lane.steps_since_admit >= ADMIT_EVERY):
                    waiting = [j for j in waiting if j not in mine]
                    try:
                        lane.admit(mine)
                    except Exception as exc:  # a request that cannot be prefilled fails alone
                        logger.exception("reference engine failed to prefill %d requests", len(mine))
                        for j in mine:
                            j.emit(exc)
            self._running = sum(len(lane) for lane in lanes)
            self.largest_batch = max(self.largest_batch, self._running)
            for lane in lanes:
                if not len(lane):
                    continue
                try:
                    lane.step()
                except Exception as exc:  # the worker must survive any failed step
                    logger.exception("reference engine failed on a batch of %d requests", len(lane))
                    lane.fail(exc)
            self._running = sum(len(lane) for lane in lanes) + len(waiting)

    def unsupported(self, options: SamplingOptions) -> str | None:
        """The reference engine has no structured-output backend, computes only the last position's logits at
        prefill (no prompt logprobs) and decodes with the fast tokenizer (no spaces_between_special_tokens)."""
        if options.structured is not None:
            return "structured outputs (response_format / structured_outputs)"
        if options.prompt_logprobs is not None:
            return "prompt_logprobs"
        if options.bad_words:
            return "bad_words"
        if not options.spaces_between_special_tokens:
            return "spaces_between_special_tokens"
        return None

    def _row(self, job: Job) -> BatchRow:
        opts = job.request.sampling
        return BatchRow(job=job, sampler=TokenSampler(opts, self._vocab, job.request.prompt_token_ids, self._eos_ids),
                        detok=IncrementalDetokenizer(self.tokenizer, opts.stop, opts.include_stop_str_in_output,
                                                     opts.skip_special_tokens))

"""The transformers reference engine: simple, exact, one request at a time on a worker thread.

It exists to cross-check vLLM (differential tests) and to start in seconds; it is not meant for throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from guards.logits.hf_adapter import GatewayHFLogitsProcessor
from server.engines.base import Engine, EngineOutput, EngineRequest
from server.engines.detokenize import IncrementalDetokenizer
from server.engines.lora import LoRAAdapter
from server.engines.sampling import TokenSampler
from server.errors import InvalidRequestError, ServiceUnavailableError
from server.settings import EngineSettings

logger = logging.getLogger(__name__)


@dataclass
class _Job:
    request: EngineRequest
    loop: asyncio.AbstractEventLoop
    outputs: asyncio.Queue[EngineOutput | BaseException]
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, item: EngineOutput | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.outputs.put_nowait, item)


class HFEngine(Engine):
    kind = "hf"

    def __init__(self, settings: EngineSettings, model_path: Path, work_dir: Path) -> None:
        super().__init__(settings, model_path, work_dir)
        self.model: torch.nn.Module | None = None
        self._adapters: dict[str, LoRAAdapter] = {}
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._eos_ids: set[int] = set()
        self._busy = False
        # module path -> module, for applying LoRA deltas by the adapter's module names
        self._modules: dict[str, torch.nn.Module] = {}

    async def start(self) -> None:
        from transformers import AutoModelForCausalLM, GenerationConfig

        dtype = getattr(torch, self.settings.dtype)
        self.model = await asyncio.to_thread(AutoModelForCausalLM.from_pretrained, self.model_path, dtype=dtype)
        self.model.eval()
        self._modules = dict(self.model.named_modules())
        eos: set[int] = set()
        if self.tokenizer.eos_token_id is not None:
            eos.add(int(self.tokenizer.eos_token_id))
        with contextlib.suppress(OSError):
            gen_eos = GenerationConfig.from_pretrained(self.model_path).eos_token_id
            eos.update([gen_eos] if isinstance(gen_eos, int) else (gen_eos or []))
        self._eos_ids = eos
        self._worker = threading.Thread(target=self._run, name="hf-engine", daemon=True)
        self._worker.start()

    async def shutdown(self) -> None:
        if self._worker is not None:
            self._jobs.put(None)
            await asyncio.to_thread(self._worker.join, 10)
            self._worker = None

    async def check_health(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def num_running(self) -> int:
        return self._jobs.qsize() + int(self._busy)

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
        job = _Job(request=request, loop=asyncio.get_running_loop(), outputs=asyncio.Queue())
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

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if job.cancelled.is_set():
                continue
            self._busy = True
            try:
                for output in self._generate(job):
                    job.emit(output)
                    if job.cancelled.is_set():
                        break
            except Exception as exc:  # the worker must survive any single request
                logger.exception("reference engine failed on request %s", job.request.request_id)
                job.emit(exc)
            finally:
                self._busy = False

    @contextlib.contextmanager
    def _lora(self, request: EngineRequest) -> Iterator[None]:
        if request.lora is None:
            yield
            return
        adapter = self._adapters[request.lora.name]
        factor = adapter.scaling * request.lora.scale
        modules = self._modules
        handles = []
        for name, (a, b) in adapter.weights.items():
            def hook(_m: torch.nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor,
                     a: torch.Tensor = a, b: torch.Tensor = b) -> torch.Tensor:
                return out + factor * ((args[0] @ a.T) @ b.T)
            handles.append(modules[name].register_forward_hook(hook))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @torch.inference_mode()
    def _generate(self, job: _Job) -> Iterator[EngineOutput]:
        assert self.model is not None
        req = job.request
        opts = req.sampling
        vocab = int(self.model.get_output_embeddings().weight.shape[0])
        sampler = TokenSampler(opts, vocab)
        output_ids: list[int] = []
        processor = None
        if req.logits is not None and not req.logits.is_empty():
            processor = GatewayHFLogitsProcessor([req.logits], [output_ids])
        detok = IncrementalDetokenizer(self.tokenizer, opts.stop)
        n_prompt = req.num_prompt_tokens
        with self._lora(req):
            if req.prompt_embeds is not None:
                dtype = next(self.model.parameters()).dtype
                out = self.model(inputs_embeds=req.prompt_embeds.to(dtype)[None], use_cache=True)
            else:
                out = self.model(input_ids=torch.tensor([req.prompt_token_ids]), use_cache=True)
            while True:
                logits = sampler.adjust(out.logits[0, -1].float())
                if processor is not None:
                    logits = processor(torch.tensor([output_ids]), logits[None])[0]
                token = sampler.choose(logits)
                sampler.observe(token)
                output_ids.append(token)
                finish = None
                if token in self._eos_ids:
                    finish = "stop"
                    delta = detok.flush()
                else:
                    delta, hit_stop = detok.push(token)
                    if hit_stop:
                        finish = "stop"
                    elif len(output_ids) >= opts.max_tokens or n_prompt + len(output_ids) >= \
                            self.settings.max_model_len:
                        finish = "length"
                        delta += detok.flush()
                yield EngineOutput(text=delta, token_ids=[token], num_prompt_tokens=n_prompt,
                                   num_output_tokens=len(output_ids), finish_reason=finish,
                                   finished=finish is not None)
                if finish is not None or job.cancelled.is_set():
                    return
                out = self.model(input_ids=torch.tensor([[token]]), past_key_values=out.past_key_values,
                                 use_cache=True)

"""The production engine: vLLM's ``AsyncLLM`` embedded in the gateway's process (its engine core runs beside it).

Embedding it, rather than proxying to a vLLM server, keeps prompt embeddings (ECO) off the network and lets the
gateway pass LoRA requests and logits-processor arguments that the HTTP API does not carry.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from server.engines.base import (
    Engine,
    EngineOutput,
    EngineRequest,
    SamplingOptions,
    StructuredSpec,
    TokenLogprobs,
)
from server.engines.lora import scaled_copy_dir, write_scaled_copies
from server.errors import InvalidRequestError, ServiceUnavailableError
from server.settings import EngineSettings

logger = logging.getLogger(__name__)


def vllm_environment(settings: EngineSettings, work_dir: Path) -> dict[str, str]:
    """What vLLM reads from the environment once, at import; shared with the benchmark's bare vLLM server."""
    return {
        "VLLM_CACHE_ROOT": str(work_dir / "vllm"),
        "VLLM_CPU_KVCACHE_SPACE": str(settings.kv_cache_space_gib),
        # The gateway's processor implements the V1 model-runner interface (guards/logits/vllm_adapter.py).
        "VLLM_USE_V2_MODEL_RUNNER": "0",
    }


PROCESSOR = "guards.logits.vllm_adapter:GatewayLogitsProcessor"
_VERIFIED_KEPT = 256


def processor_plugin_installed() -> bool:
    """vLLM loads the ``vllm.logits_processors`` entry points itself, and a processor it is also handed would run
    twice: pass it explicitly only where the package is not installed (a source tree on ``PYTHONPATH``)."""
    from importlib.metadata import entry_points

    return any(ep.value == PROCESSOR for ep in entry_points(group="vllm.logits_processors"))


class VLLMEngine(Engine):
    kind = "vllm"

    def __init__(self, settings: EngineSettings, model_path: Path, work_dir: Path) -> None:
        super().__init__(settings, model_path, work_dir)
        # Set before anything imports vLLM; an operator's own values win.
        for key, value in vllm_environment(settings, work_dir).items():
            os.environ.setdefault(key, value)
        self._llm: Any = None
        # adapter name -> {scale level -> LoRARequest}
        self._loras: dict[str, dict[float, Any]] = {}
        self._next_lora_id = 1
        self._lora_lock = asyncio.Lock()
        # structured-output constraints vLLM has accepted, oldest first (bounded: clients send their own)
        self._verified: dict[StructuredSpec, None] = {}

    async def start(self) -> None:
        from vllm.config import StructuredOutputsConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        s = self.settings
        args = AsyncEngineArgs(
            model=str(self.model_path),
            tokenizer=str(self.model_path),
            served_model_name=self.info.served_model_name,
            dtype=s.dtype,
            max_model_len=s.max_model_len,
            enforce_eager=s.enforce_eager,
            max_num_seqs=s.max_num_seqs,
            seed=s.seed,
            enable_prompt_embeds=s.enable_prompt_embeds,
            enable_lora=s.enable_lora,
            max_lora_rank=s.max_lora_rank,
            max_loras=s.max_loras,
            max_cpu_loras=s.max_cpu_loras,
            logits_processors=[] if processor_plugin_installed() else [PROCESSOR],
            disable_log_stats=True,
            logprobs_mode=s.logprobs_mode,
            structured_outputs_config=StructuredOutputsConfig(backend=s.structured_outputs_backend),
        )
        self._llm = AsyncLLM.from_engine_args(args)

    async def shutdown(self) -> None:
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None

    async def check_health(self) -> bool:
        if self._llm is None or self._llm.errored:
            return False
        try:
            await self._llm.check_health()
        except Exception:
            return False
        return True

    def num_running(self) -> int:
        return 0 if self._llm is None else int(self._llm.output_processor.get_num_unfinished_requests())

    # ---- LoRA ------------------------------------------------------------------------------------------------------
    async def load_lora(self, name: str, path: Path) -> None:
        from vllm.lora.request import LoRARequest

        if not self.settings.enable_lora:
            raise InvalidRequestError("LoRA is disabled on this engine (engine.enable_lora=false)")
        async with self._lora_lock:
            if name in self._loras:
                await self._unload(name)
            root = self.work_dir / "loras"
            copies = await asyncio.to_thread(write_scaled_copies, path, root, name, self.info.lora_scale_levels)
            requests: dict[float, Any] = {}
            for level, copy in copies.items():
                req = LoRARequest(lora_name=f"{name}@{level:g}", lora_int_id=self._next_lora_id,
                                  lora_path=str(copy))
                self._next_lora_id += 1
                await self._llm.add_lora(req)
                requests[level] = req
            self._loras[name] = requests

    async def unload_lora(self, name: str) -> None:
        async with self._lora_lock:
            await self._unload(name)

    async def _unload(self, name: str) -> None:
        for level, req in self._loras.pop(name, {}).items():
            await self._llm.remove_lora(req.lora_int_id)
            shutil.rmtree(scaled_copy_dir(self.work_dir / "loras", name, level), ignore_errors=True)

    def loaded_loras(self) -> set[str]:
        return set(self._loras)

    # ---- inference -------------------------------------------------------------------------------------------------
    def _sampling_params(self, request: EngineRequest) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        from guards.logits.args import to_extra_args

        o: SamplingOptions = request.sampling
        extra = None
        if request.logits is not None and not request.logits.is_empty():
            extra = to_extra_args(request.logits)
        return SamplingParams(
            n=1,
            max_tokens=o.max_tokens,
            temperature=o.temperature,
            top_p=o.top_p,
            top_k=o.top_k,
            min_p=o.min_p,
            repetition_penalty=o.repetition_penalty,
            min_tokens=o.min_tokens,
            seed=o.seed,
            stop=list(o.stop) or None,
            stop_token_ids=list(o.stop_token_ids) or None,
            include_stop_str_in_output=o.include_stop_str_in_output,
            presence_penalty=o.presence_penalty,
            frequency_penalty=o.frequency_penalty,
            logit_bias=dict(o.logit_bias) if o.logit_bias else None,
            allowed_token_ids=list(o.allowed_token_ids) if o.allowed_token_ids is not None else None,
            bad_words=list(o.bad_words) or None,
            ignore_eos=o.ignore_eos,
            logprobs=o.logprobs,
            prompt_logprobs=o.prompt_logprobs,
            structured_outputs=_structured(o.structured),
            extra_args=extra,
            output_kind=RequestOutputKind.DELTA,
            skip_special_tokens=o.skip_special_tokens,
            spaces_between_special_tokens=o.spaces_between_special_tokens,
        )

    def validate_request(self, request: EngineRequest) -> None:
        if request.prompt_embeds is not None and not self.settings.enable_prompt_embeds:
            raise InvalidRequestError("prompt embeddings are disabled on this engine "
                                      "(engine.enable_prompt_embeds=false)", param="prompt")
        super().validate_request(request)
        spec = request.sampling.structured
        if spec is not None and spec not in self._verified and self._llm is not None:
            # vLLM checks a constraint (compiles the regex, grammar or schema) when the request reaches its engine:
            # checked here, before a stream starts, a malformed one is a 400 like on `vllm serve`, not an error
            # event inside a 200 stream. Once per constraint: a request is validated per prompt, per choice and
            # again as it starts, and every one of those carries the same constraint.
            from vllm.exceptions import VLLMError

            processor = self._llm.input_processor
            try:
                self._sampling_params(request).verify(processor.model_config, processor.speculative_config,
                                                      processor.structured_outputs_config, processor.tokenizer)
            except (VLLMError, ValueError) as exc:
                raise InvalidRequestError(str(exc), param=getattr(exc, "parameter", None)) from exc
            if len(self._verified) >= _VERIFIED_KEPT:
                self._verified.pop(next(iter(self._verified)))
            self._verified[spec] = None

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        from vllm.exceptions import VLLMClientError
        from vllm.inputs import EmbedsPrompt, TokensPrompt
        from vllm.v1.engine.exceptions import EngineDeadError

        if self._llm is None:
            raise ServiceUnavailableError("the engine is not running")
        self.validate_request(request)
        prompt: Any
        if request.prompt_embeds is not None:
            prompt = EmbedsPrompt(prompt_embeds=request.prompt_embeds)
            if request.sampling.prompt_logprobs is not None and request.embeds_token_ids is not None:
                # scored against the tokens the (corrupted) embeddings stand for; every position stays an embedding
                prompt["prompt_token_ids"] = list(request.embeds_token_ids)
                prompt["prompt_is_token_ids"] = [False] * len(request.embeds_token_ids)
        else:
            prompt = TokensPrompt(prompt_token_ids=list(request.prompt_token_ids or []))
        lora = None
        if request.lora is not None:
            lora = self._loras[request.lora.name][request.lora.scale]
        n_prompt = request.num_prompt_tokens
        n_out = 0
        try:
            stream = self._llm.generate(prompt, self._sampling_params(request), request.request_id,
                                        lora_request=lora)
            first = True
            async for out in stream:
                completion = out.outputs[0]
                n_out += len(completion.token_ids)
                finish = completion.finish_reason
                prompt_lps = None
                if first and request.sampling.prompt_logprobs is not None and out.prompt_logprobs is not None:
                    prompt_ids = request.prompt_token_ids or request.embeds_token_ids or []
                    prompt_lps = [None if lp is None or i >= len(prompt_ids) else _position(prompt_ids[i], lp)
                                  for i, lp in enumerate(out.prompt_logprobs)]
                first = False
                yield EngineOutput(
                    text=completion.text,
                    token_ids=list(completion.token_ids),
                    num_prompt_tokens=n_prompt,
                    num_output_tokens=n_out,
                    finish_reason=finish if finish in ("stop", "length", "abort") else None,
                    finished=out.finished,
                    logprobs=None if completion.logprobs is None else [
                        _position(t, lp) for t, lp in zip(completion.token_ids, completion.logprobs, strict=False)],
                    prompt_logprobs=prompt_lps,
                    stop_reason=completion.stop_reason,
                )
        except EngineDeadError as exc:
            raise ServiceUnavailableError(f"the engine stopped: {exc}") from exc
        except (VLLMClientError, ValueError) as exc:  # vLLM's input validation
            raise InvalidRequestError(str(exc), param=getattr(exc, "parameter", None)) from exc


def _position(token_id: int, logprobs: dict[int, Any]) -> TokenLogprobs:
    """vLLM's {token id: Logprob(logprob, rank)} for one position: the chosen token's and the top ranks'."""
    chosen = logprobs.get(token_id)
    top = sorted(((t, lp) for t, lp in logprobs.items() if lp.rank is not None and lp.rank >= 1),
                 key=lambda item: item[1].rank)
    return TokenLogprobs(token_id=token_id, logprob=_finite(chosen.logprob if chosen is not None else float("-inf")),
                         top=[(t, _finite(lp.logprob)) for t, lp in top],
                         rank=chosen.rank if chosen is not None else None)


def _finite(logprob: float) -> float:
    # vLLM's serving layer writes -inf (a token the processors removed) as -9999.0: JSON has no infinity
    return max(logprob, -9999.0)


def _structured(spec: StructuredSpec | None) -> Any:
    if spec is None:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    return StructuredOutputsParams(**spec.vllm_params())

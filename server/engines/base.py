"""The engine contract: what the gateway needs from an inference engine, and nothing more.

Both implementations (vLLM in production, transformers as the reference) take the same ``EngineRequest``: token
ids *or* prompt embeddings (ECO), an optional LoRA adapter at a strength level (O3) and optional logits-processor
arguments (GUARD), and stream ``EngineOutput`` deltas.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from guards.logits.args import LogitsArgs
from server.errors import InvalidRequestError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

    from server.settings import EngineSettings

FinishReason = Literal["stop", "length", "abort"]


GREEDY_BELOW = 1e-5


class StructuredSpec(BaseModel):
    """One structured-output constraint (vLLM's ``StructuredOutputsParams``); ``value`` is the JSON schema (as JSON
    text), the regex or the grammar; ``choices`` the allowed strings."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["json", "regex", "choice", "grammar", "json_object"]
    value: str | None = None
    choices: tuple[str, ...] = ()
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None

    def vllm_params(self) -> dict[str, Any]:
        """The keyword arguments of vLLM's ``StructuredOutputsParams``, also the JSON its HTTP API takes."""
        by_kind: dict[str, dict[str, Any]] = {
            "json": {"json": self.value}, "regex": {"regex": self.value}, "grammar": {"grammar": self.value},
            "choice": {"choice": list(self.choices)}, "json_object": {"json_object": True}}
        kind = by_kind[self.kind]
        return {**kind, "disable_any_whitespace": self.disable_any_whitespace,
                "disable_additional_properties": self.disable_additional_properties,
                "whitespace_pattern": self.whitespace_pattern}


class SamplingOptions(BaseModel):
    model_config = ConfigDict(frozen=True)

    max_tokens: int = Field(ge=1)
    temperature: float = Field(default=1.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] | None = None
    ignore_eos: bool = False  # decode to max_tokens (benchmarks); stop strings still apply
    # vLLM's extensions, with its meanings and defaults (0 / -1 top_k: off)
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    min_tokens: int = 0
    stop_token_ids: tuple[int, ...] = ()
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    allowed_token_ids: tuple[int, ...] | None = None
    bad_words: tuple[str, ...] = ()
    # top logprobs per generated token (0: only the chosen token's), per prompt token; None: none
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    structured: StructuredSpec | None = None

    @property
    def greedy(self) -> bool:
        # vLLM treats any temperature below 1e-5 as greedy (its _SAMPLING_EPS); dividing logits by a denormal
        # temperature such as 5e-324 would make them infinite.
        return self.temperature < GREEDY_BELOW


class LoRASelection(BaseModel):
    """An adapter loaded with ``Engine.load_lora`` and the strength to apply it at (one of the served levels)."""

    model_config = ConfigDict(frozen=True)

    name: str
    scale: float = Field(default=1.0, gt=0.0)


@dataclass
class EngineRequest:
    request_id: str
    sampling: SamplingOptions
    prompt_token_ids: list[int] | None = None
    # (seq_len, hidden_size) float tensor; replaces prompt_token_ids when the prompt is corrupted (ECO).
    prompt_embeds: torch.Tensor | None = None
    lora: LoRASelection | None = None
    logits: LogitsArgs | None = None
    # with prompt_embeds: the tokens they stand for, which prompt logprobs are scored against
    embeds_token_ids: list[int] | None = None

    def __post_init__(self) -> None:
        if (self.prompt_token_ids is None) == (self.prompt_embeds is None):
            raise ValueError("an EngineRequest carries exactly one of prompt_token_ids and prompt_embeds")

    @property
    def num_prompt_tokens(self) -> int:
        if self.prompt_token_ids is not None:
            return len(self.prompt_token_ids)
        assert self.prompt_embeds is not None
        return int(self.prompt_embeds.shape[0])


@dataclass
class TokenLogprobs:
    """A position's log-probabilities under the distribution the token was chosen from (after the guards)."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)  # the k most likely, best first
    rank: int | None = None  # the chosen token's rank in the whole vocabulary, where the engine reports it


@dataclass
class EngineOutput:
    """One streamed step of one request: the new text and tokens since the previous output."""

    text: str
    token_ids: list[int]
    num_prompt_tokens: int
    num_output_tokens: int
    finish_reason: FinishReason | None = None
    finished: bool = False
    # one per token in ``token_ids`` when logprobs were asked for
    logprobs: list[TokenLogprobs] | None = None
    # with the first output, when prompt logprobs were asked for: one per prompt token (None for the first)
    prompt_logprobs: list[TokenLogprobs | None] | None = None
    # the stop string or stop token id that finished the request
    stop_reason: int | str | None = None


@dataclass
class EngineInfo:
    kind: str
    model_path: Path
    served_model_name: str
    max_model_len: int
    lora_scale_levels: list[float] = field(default_factory=list)


class Engine(abc.ABC):
    """Base class of the engines; ``server.engines.ENGINES`` maps each ``engine.kind`` to its implementation."""

    def __init__(self, settings: EngineSettings, model_path: Path, work_dir: Path) -> None:
        from transformers import AutoTokenizer

        self.settings = settings
        self.model_path = model_path
        # Engine-owned files (scaled LoRA copies, compile caches) go here.
        self.work_dir = work_dir
        self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(model_path)
        self._embedding: torch.Tensor | None = None
        self.info = EngineInfo(
            kind=self.kind,
            model_path=model_path,
            served_model_name=settings.served_model_name or model_path.name,
            max_model_len=settings.max_model_len,
            lora_scale_levels=sorted(settings.lora_scale_levels),
        )

    kind: str = "base"

    # ---- lifecycle -------------------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def start(self) -> None:
        """Load weights and start workers; called once from the app's lifespan."""

    @abc.abstractmethod
    async def shutdown(self) -> None: ...

    @abc.abstractmethod
    async def check_health(self) -> bool: ...

    @abc.abstractmethod
    def num_running(self) -> int:
        """Requests the engine holds (queued or generating): after a client goes away this must fall back."""

    # ---- inference -------------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        """Stream outputs; cancelling the iterator aborts the request in the engine."""

    # ---- LoRA ------------------------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def load_lora(self, name: str, path: Path) -> None:
        """Make adapter ``name`` available at every served strength level, without a restart."""

    @abc.abstractmethod
    async def unload_lora(self, name: str) -> None: ...

    @abc.abstractmethod
    def loaded_loras(self) -> set[str]: ...

    def unsupported(self, options: SamplingOptions) -> str | None:
        """The first sampling field this engine cannot honour (a 400 names it), or None. vLLM honours them all."""
        return None

    # ---- shared helpers --------------------------------------------------------------------------------------------
    def render_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                    continue_final_message: bool = False, tools: list[dict[str, Any]] | None = None,
                    template_kwargs: dict[str, Any] | None = None) -> list[int]:
        """Apply the model's own chat template; the engines then only ever see token ids."""
        return chat_token_ids(self.tokenizer, messages, add_generation_prompt=add_generation_prompt,
                              continue_final_message=continue_final_message, tools=tools, **(template_kwargs or {}))

    def embedding_matrix(self) -> torch.Tensor:
        """The input embedding table, read from the checkpoint (the vLLM engine's weights live in another process)."""
        if self._embedding is None:
            from server.engines.weights import load_input_embeddings

            self._embedding = load_input_embeddings(self.model_path)
        return self._embedding

    def embed_tokens(self, token_ids: list[int]) -> torch.Tensor:
        import torch

        return self.embedding_matrix()[torch.tensor(token_ids, dtype=torch.long)].clone()

    def validate_request(self, request: EngineRequest) -> None:
        """Reject what would crash or hang the engine, as a 400, before it gets there."""
        vocab = len(self.tokenizer)
        if request.prompt_token_ids is not None:
            if not request.prompt_token_ids:
                raise InvalidRequestError("the prompt is empty", param="prompt")
            bad = [t for t in request.prompt_token_ids if t < 0 or t >= vocab]
            if bad:
                raise InvalidRequestError(f"token id {bad[0]} is outside the vocabulary (0..{vocab - 1})",
                                          param="prompt")
        if request.prompt_embeds is not None:
            hidden = self.embedding_matrix().shape[1]
            if request.prompt_embeds.ndim != 2 or request.prompt_embeds.shape[1] != hidden or \
                    request.prompt_embeds.shape[0] == 0:
                raise InvalidRequestError(f"prompt embeddings must have shape (seq_len>0, {hidden}), "
                                          f"got {tuple(request.prompt_embeds.shape)}", param="prompt")
        if request.lora is not None:
            if request.lora.name not in self.loaded_loras():
                raise InvalidRequestError(f"LoRA adapter '{request.lora.name}' is not loaded", param="lora")
            if request.lora.scale not in self.info.lora_scale_levels:
                raise InvalidRequestError(f"LoRA scale {request.lora.scale} is not one of the served levels "
                                          f"{self.info.lora_scale_levels}", param="lora")
        if request.logits is not None:
            bad = [t for t in request.logits.token_ids() if t < 0 or t >= vocab]
            if bad:
                raise InvalidRequestError(f"logits-processor token id {bad[0]} is outside the vocabulary",
                                          param="logits")
        if request.sampling.logit_bias:
            bad = [t for t in request.sampling.logit_bias if t < 0 or t >= vocab]
            if bad:
                raise InvalidRequestError(f"logit_bias token id {bad[0]} is outside the vocabulary",
                                          param="logit_bias")
        for name in ("stop_token_ids", "allowed_token_ids"):
            bad = [t for t in getattr(request.sampling, name) or () if t < 0 or t >= vocab]
            if bad:
                raise InvalidRequestError(f"{name}: token id {bad[0]} is outside the vocabulary", param=name)
        refused = self.unsupported(request.sampling)
        if refused is not None:
            raise InvalidRequestError(f"{refused} is not supported by the {self.kind} engine", param=refused)


def chat_token_ids(tokenizer: Any, messages: list[dict[str, Any]], **kwargs: Any) -> list[int]:
    """The chat template's token ids: transformers returns a list, or a ``BatchEncoding`` in newer releases."""
    out: Any = tokenizer.apply_chat_template(messages, tokenize=True, **kwargs)
    if hasattr(out, "keys"):
        out = out["input_ids"]
    return [int(i) for i in out]

"""vLLM V1 model-runner adapter for the logits core; registered at engine start (``logits_processors=[...]``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from guards.logits import EXTRA_ARGS_KEY
from guards.logits.core import BannedTokensCore

if TYPE_CHECKING:
    from vllm.config import VllmConfig


def _banned(params: SamplingParams) -> list[int] | None:
    extra = params.extra_args or {}
    return extra.get(EXTRA_ARGS_KEY) or None


class GatewayLogitsProcessor(LogitsProcessor):
    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool) -> None:
        self.core = BannedTokensCore(device)
        self.vocab_size = vllm_config.model_config.get_vocab_size()

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        banned = _banned(sampling_params)
        if banned is None:
            return
        if not isinstance(banned, list) or not all(isinstance(t, int) for t in banned):
            raise ValueError(f"{EXTRA_ARGS_KEY} must be a list of token ids")

    def is_argmax_invariant(self) -> bool:
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        self.core.update(
            batch_update.removed,
            [(index, _banned(params)) for index, params, _, _ in batch_update.added],
            [(a, b, d == MoveDirectionality.SWAP) for a, b, d in batch_update.moved],
        )

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return self.core.apply(logits)

"""vLLM V1 model-runner adapter for the GUARD core; registered at engine start (``logits_processors=[...]``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from guards.logits.args import from_extra_args
from guards.logits.core import GuardCore

if TYPE_CHECKING:
    from vllm.config import VllmConfig


class GatewayLogitsProcessor(LogitsProcessor):
    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool) -> None:
        self.core = GuardCore(device)

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        from_extra_args(sampling_params.extra_args)  # raises ValueError, which vLLM returns to the caller

    def is_argmax_invariant(self) -> bool:
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        # vLLM hands over each added request's output token list, which it keeps appending to in place.
        self.core.update(
            batch_update.removed,
            [(index, from_extra_args(getattr(params, "extra_args", None)), output, prompt)
             for index, params, prompt, output in batch_update.added],
            [(a, b, d == MoveDirectionality.SWAP) for a, b, d in batch_update.moved],
        )

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return self.core.apply(logits)

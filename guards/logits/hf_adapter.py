"""transformers adapter for the GUARD core, used by the reference engine (one request per batch row)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from transformers import LogitsProcessor

from guards.logits.args import LogitsArgs
from guards.logits.core import GuardCore


class GatewayHFLogitsProcessor(LogitsProcessor):
    """``outputs[i]`` is row i's list of generated tokens, which the caller keeps appending to."""

    def __init__(self, args_per_row: list[LogitsArgs | None], outputs: list[Sequence[int]],
                 prompts: list[Sequence[int] | None]) -> None:
        self.core = GuardCore()
        self.core.update([], [(i, a, out, p) for i, (a, out, p) in
                              enumerate(zip(args_per_row, outputs, prompts, strict=True))], [])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return cast(torch.FloatTensor, self.core.apply(scores))  # transformers' signature; the same tensor type

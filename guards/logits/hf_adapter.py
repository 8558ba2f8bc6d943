"""transformers adapter for the logits core, used by the reference engine (one request per batch row)."""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from guards.logits.core import BannedTokensCore


class GatewayHFLogitsProcessor(LogitsProcessor):
    def __init__(self, banned_per_row: list[list[int] | None]) -> None:
        self.core = BannedTokensCore()
        self.core.update([], list(enumerate(banned_per_row)), [])

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        return self.core.apply(scores)

"""Token selection for the reference engine, written to match vLLM's order of operations.

vLLM applies, in order: penalties (presence, frequency), logit bias and the gateway's processor, then either argmax
(temperature 0) or temperature scaling, top-p and a draw.
"""

from __future__ import annotations

import torch

from server.engines.base import SamplingOptions


class TokenSampler:
    def __init__(self, options: SamplingOptions, vocab_size: int) -> None:
        self.options = options
        self.vocab_size = vocab_size
        self.counts = torch.zeros(vocab_size, dtype=torch.float32)
        self.bias: tuple[torch.Tensor, torch.Tensor] | None = None
        if options.logit_bias:
            ids = torch.tensor(list(options.logit_bias.keys()), dtype=torch.long)
            values = torch.tensor(list(options.logit_bias.values()), dtype=torch.float32)
            self.bias = (ids, values)
        self.generator: torch.Generator | None = None
        if not options.greedy:
            self.generator = torch.Generator()
            self.generator.manual_seed(options.seed if options.seed is not None else int(torch.seed() % 2**63))

    @property
    def plain_greedy(self) -> bool:
        """Argmax of the raw logits: what a whole batch of such rows can choose in one tensor op."""
        o = self.options
        return o.greedy and not o.presence_penalty and not o.frequency_penalty and self.bias is None

    def observe(self, token_id: int) -> None:
        if token_id < self.vocab_size:
            self.counts[token_id] += 1

    def adjust(self, logits: torch.Tensor) -> torch.Tensor:
        """Penalties and bias on a (vocab,) fp32 row, before the logits processors."""
        o = self.options
        if o.presence_penalty or o.frequency_penalty:
            logits = logits - o.frequency_penalty * self.counts - o.presence_penalty * (self.counts > 0).float()
        if self.bias is not None:
            logits = logits.clone()
            logits[self.bias[0]] += self.bias[1]
        return logits

    def choose(self, logits: torch.Tensor) -> int:
        o = self.options
        if o.greedy:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / o.temperature, dim=-1)
        if o.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < o.top_p
            keep[0] = True
            filtered = torch.zeros_like(probs)
            filtered[order[keep]] = sorted_probs[keep]
            probs = filtered / filtered.sum()
        return int(torch.multinomial(probs, 1, generator=self.generator))

"""Token selection for the reference engine, written to match vLLM's order of operations.

vLLM applies, in order: allowed tokens, min_tokens and logit bias, penalties (repetition, frequency, presence) and the
gateway's processor, then either argmax (temperature 0) or temperature scaling, min_p, top-k and top-p and a draw.
"""

from __future__ import annotations

import torch

from server.engines.base import SamplingOptions


class TokenSampler:
    def __init__(self, options: SamplingOptions, vocab_size: int, prompt_ids: list[int] | None = None,
                 stop_ids: set[int] | None = None) -> None:
        self.options = options
        self.vocab_size = vocab_size
        self.counts = torch.zeros(vocab_size, dtype=torch.float32)
        self.generated = 0
        # tokens the repetition penalty applies to: the prompt's and the output's (vLLM's definition)
        self.seen: torch.Tensor | None = None
        if options.repetition_penalty != 1.0:
            self.seen = torch.zeros(vocab_size, dtype=torch.bool)
            if prompt_ids:
                self.seen[torch.tensor([t for t in prompt_ids if t < vocab_size], dtype=torch.long)] = True
        # EOS and stop_token_ids: held back until min_tokens are out
        held = sorted((stop_ids or set()) | set(options.stop_token_ids)) if options.min_tokens else []
        self.held = torch.tensor(held, dtype=torch.long)
        self.allowed: torch.Tensor | None = None
        if options.allowed_token_ids is not None:
            self.allowed = torch.full((vocab_size,), float("-inf"))
            self.allowed[torch.tensor(options.allowed_token_ids, dtype=torch.long)] = 0.0
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
        return o.greedy and not o.presence_penalty and not o.frequency_penalty and self.bias is None and \
            self.seen is None and not len(self.held) and self.allowed is None and o.logprobs is None

    def observe(self, token_id: int) -> None:
        self.generated += 1
        if token_id < self.vocab_size:
            self.counts[token_id] += 1
            if self.seen is not None:
                self.seen[token_id] = True

    def adjust(self, logits: torch.Tensor) -> torch.Tensor:
        """Allowed tokens, min_tokens, bias and penalties on a (vocab,) fp32 row, before the logits processors."""
        o = self.options
        if self.allowed is not None:
            logits = logits + self.allowed
        if len(self.held) and self.generated < o.min_tokens:
            held = logits.clone()
            held[self.held] = float("-inf")
            if torch.isfinite(held).any():  # allowed_token_ids may leave nothing but the held tokens
                logits = held
        if self.seen is not None:
            penalised = torch.where(logits > 0, logits / o.repetition_penalty, logits * o.repetition_penalty)
            logits = torch.where(self.seen, penalised, logits)
        if o.presence_penalty or o.frequency_penalty:
            logits = logits - o.frequency_penalty * self.counts - o.presence_penalty * (self.counts > 0).float()
        if self.bias is not None:
            logits = logits.clone()
            logits[self.bias[0]] += self.bias[1]
        return logits

    def distribution(self, logits: torch.Tensor) -> torch.Tensor:
        """The log-probabilities the token is drawn from (vLLM's processed_logprobs): temperature, min_p, top-k."""
        o = self.options
        if o.greedy:
            return torch.log_softmax(logits, dim=-1)
        logits = logits / o.temperature
        if o.min_p:
            probs = torch.softmax(logits, dim=-1)
            logits = logits.masked_fill(probs < o.min_p * probs.max(), float("-inf"))
        if 0 < o.top_k < logits.shape[-1]:
            kth = torch.topk(logits, o.top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return torch.log_softmax(logits, dim=-1)

    def choose(self, logits: torch.Tensor) -> int:
        o = self.options
        if o.greedy:
            return int(torch.argmax(logits))
        probs = torch.softmax(self.distribution(logits), dim=-1)
        if not torch.isfinite(probs).all():  # every candidate removed (allowed tokens all banned): no draw
            return int(torch.argmax(logits))
        if o.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < o.top_p
            keep[0] = True
            filtered = torch.zeros_like(probs)
            filtered[order[keep]] = sorted_probs[keep]
            probs = filtered / filtered.sum()
        return int(torch.multinomial(probs, 1, generator=self.generator))

"""ECO: corrupt the embeddings of a flagged prompt's tokens before the engine sees them.

The corruption functions follow the ECO reference code (``e`` a flagged token's embedding, ``n`` the first dims,
``sigma`` the strength). Noise is seeded from the prompt's token ids, so a prompt gets the same corruption every
time: temperature-0 answers stay reproducible and prefix caching still hits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch

# the character spans of the flagged targets' terms in a text
FindSpans = Callable[[str], list[tuple[int, int]]]
# (embeddings of the flagged tokens (k, d), sigma, n dims, generator) -> corrupted embeddings
Corruption = Callable[[torch.Tensor, float, int, torch.Generator], torch.Tensor]


def rand_noise_first_n(e: torch.Tensor, sigma: float, n: int, g: torch.Generator) -> torch.Tensor:
    out = e.clone()
    out[:, :n] += sigma * torch.randn(e.shape[0], n, generator=g, dtype=e.dtype)
    return out


def zero_out_first_n(e: torch.Tensor, sigma: float, n: int, g: torch.Generator) -> torch.Tensor:
    out = e.clone()
    out[:, :n] = 0.0
    return out


def flip_sign_first_n(e: torch.Tensor, sigma: float, n: int, g: torch.Generator) -> torch.Tensor:
    out = e.clone()
    out[:, :n] = -out[:, :n]
    return out


CORRUPTIONS: dict[str, Corruption] = {
    "rand_noise_first_n": rand_noise_first_n,
    "zero_out_first_n": zero_out_first_n,
    "flip_sign_first_n": flip_sign_first_n,
}


def prompt_seed(token_ids: Sequence[int]) -> int:
    digest = hashlib.blake2b(repr(list(token_ids)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def corrupt(embeds: torch.Tensor, positions: Sequence[int], corruption: str, sigma: float, dims: int | None,
            seed: int) -> torch.Tensor:
    """A copy of ``embeds`` (seq_len, d) with the rows at ``positions`` corrupted."""
    if not positions:
        return embeds
    fn = CORRUPTIONS[corruption]
    g = torch.Generator().manual_seed(seed)
    index = torch.tensor(sorted(set(positions)), dtype=torch.long)
    n = embeds.shape[1] if dims is None else min(dims, embeds.shape[1])
    out = embeds.clone()
    out[index] = fn(embeds[index], sigma, n, g)
    return out


def token_offsets(token_ids: Sequence[int], tokenizer) -> tuple[str, list[tuple[int, int]]]:
    """The prompt as the concatenation of its decoded tokens, and each token's character span in it.

    Terms are then found in the very text the tokens spell, so spans map onto tokens exactly, whatever the chat
    template added around the user's words.
    """
    pieces = [tokenizer.decode([t]) for t in token_ids]
    offsets: list[tuple[int, int]] = []
    pos = 0
    for piece in pieces:
        offsets.append((pos, pos + len(piece)))
        pos += len(piece)
    return "".join(pieces), offsets


def positions_in(spans: Sequence[tuple[int, int]], offsets: Sequence[tuple[int, int]]) -> list[int]:
    """Token positions whose characters overlap any span (a token half inside a name is corrupted too)."""
    out = []
    for i, (start, end) in enumerate(offsets):
        if end > start and any(start < s_end and s_start < end for s_start, s_end in spans):
            out.append(i)
    return out


def content_spans(text: str, contents: Sequence[str]) -> list[tuple[int, int]]:
    """Where the messages' own words sit in the rendered prompt (whole-prompt corruption spares the template)."""
    spans = []
    pos = 0
    for content in contents:
        found = text.find(content, pos) if content else -1
        if found >= 0:
            spans.append((found, found + len(content)))
            pos = found + len(content)
    return spans


def corrupted_positions(token_ids: list[int], tokenizer, find: FindSpans,
                        contents: list[str], scope: str = "prompt") -> tuple[list[int], list[int]]:
    """(positions to corrupt, those of them to corrupt harder): every token of the messages' words and, within
    them, the target's literal terms; or (scope "terms") the term tokens alone, or every word when none is literal.

    Serving and ECO's strength search both call this, so the search tunes sigma on the corruption that is served.
    """
    text, offsets = token_offsets(token_ids, tokenizer)
    term_spans = find(text)
    terms = positions_in(term_spans, offsets) if term_spans else []
    if scope == "terms" and terms:
        return terms, []
    return positions_in(content_spans(text, contents), offsets), terms


def corrupt_prompt(embeds: torch.Tensor, positions: Sequence[int], boosted: Sequence[int], corruption: str,
                   sigma: float, dims: int | None, seed: int, term_boost: float) -> torch.Tensor:
    """Every position at ``sigma``, the ``boosted`` ones (the target's own name) at ``sigma * term_boost``.

    With the whole prompt at the searched strength the model can still read a name and echo it, and when the answer
    is part of the name ("Reba McEntire starred in the series ___" -> "Reba") the echo is the leak.
    """
    hard = set(boosted) & set(positions) if term_boost != 1.0 else set()
    out = corrupt(embeds, [p for p in positions if p not in hard], corruption, sigma, dims, seed)
    return corrupt(out, sorted(hard), corruption, sigma * term_boost, dims, seed + 1)

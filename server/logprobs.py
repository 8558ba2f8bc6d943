"""Engine log-probabilities -> the wire shapes of vLLM's OpenAI server (chat, completions, prompt logprobs).

The engines report what the token was chosen from (after the guards: see ``EngineSettings.logprobs_mode``), so a
forgotten target's tokens never appear here with a probability the guarded request did not give them.
"""

from __future__ import annotations

from collections.abc import Callable

from server.engines.base import TokenLogprobs
from server.responses import ChatLogprobs, CompletionLogprobs, PromptLogprobs, TokenLogprob, TopLogprob

TokenText = Callable[[int], str]


def token_text(tokenizer, as_ids: bool) -> TokenText:
    """How a token is written in logprobs: its text, or ``token_id:N`` (vLLM's return_tokens_as_token_ids)."""
    if as_ids:
        return lambda t: f"token_id:{t}"
    cache: dict[int, str] = {}

    def text(t: int) -> str:
        if t not in cache:
            cache[t] = tokenizer.decode([t])
        return cache[t]
    return text


def _bytes(text: str) -> list[int]:
    return list(text.encode("utf-8", errors="replace"))


def chat_logprobs(positions: list[TokenLogprobs], top: int, text: TokenText) -> ChatLogprobs:
    return ChatLogprobs(content=[
        TokenLogprob(token=text(p.token_id), logprob=p.logprob, bytes=_bytes(text(p.token_id)),
                     top_logprobs=[TopLogprob(token=text(t), logprob=lp, bytes=_bytes(text(t)))
                                   for t, lp in p.top[:top]])
        for p in positions])


def completion_logprobs(positions: list[TokenLogprobs | None], top: int, text: TokenText,
                        offset: int = 0) -> CompletionLogprobs:
    """``positions`` may start with the echoed prompt's (the first of which has no logprob)."""
    # every field given, not defaulted: stream chunks are written with only the fields set
    out = CompletionLogprobs(text_offset=[], token_logprobs=[], tokens=[], top_logprobs=[])
    for p in positions:
        if p is None:
            out.tokens.append("")
            out.token_logprobs.append(None)
            out.top_logprobs.append(None)
            out.text_offset.append(offset)
            continue
        token = text(p.token_id)
        out.tokens.append(token)
        out.token_logprobs.append(p.logprob)
        # vLLM's completions list the chosen token beside the top ones
        ranked = {text(t): lp for t, lp in p.top[:top]}
        ranked.setdefault(token, p.logprob)
        out.top_logprobs.append(ranked if top else {token: p.logprob})
        out.text_offset.append(offset)
        offset += len(token)
    return out


def prompt_logprobs(positions: list[TokenLogprobs | None], text: TokenText) -> PromptLogprobs:
    """vLLM's ``prompt_logprobs``: per position {token id: {logprob, rank, decoded_token}}."""
    out: PromptLogprobs = []
    for p in positions:
        if p is None:
            out.append(None)
            continue
        entry = {str(p.token_id): {"logprob": p.logprob, "rank": None, "decoded_token": text(p.token_id)}}
        for rank, (t, lp) in enumerate(p.top, start=1):
            if t == p.token_id:
                entry[str(t)]["rank"] = p.rank if p.rank is not None else rank
            else:
                entry[str(t)] = {"logprob": lp, "rank": rank, "decoded_token": text(t)}
        if entry[str(p.token_id)]["rank"] is None:
            entry[str(p.token_id)]["rank"] = p.rank
        out.append(entry)
    return out

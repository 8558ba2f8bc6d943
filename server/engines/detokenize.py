"""Incremental detokenization with stop strings, as a streaming client sees it.

Text is released only once it can no longer turn out to be the start of a stop string, and never while it ends in
an incomplete UTF-8 sequence; the stop string itself is not returned unless asked (vLLM's include_stop_str_in_output).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from transformers import PreTrainedTokenizerBase


class IncrementalDetokenizer:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: tuple[str, ...] = (), include_stop: bool = False,
                 skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.include_stop = include_stop
        self.skip_special_tokens = skip_special_tokens
        self.holdback = max((len(s) for s in stop), default=1) - 1
        self.ids: list[int] = []
        self.text = ""
        self.sent = 0

    def push(self, token_id: int) -> tuple[str, str | None]:
        """Add one token; return (new text to send, the stop string it hit or None)."""
        self.ids.append(token_id)
        text = decode_text(self.tokenizer, self.ids, skip_special_tokens=self.skip_special_tokens)
        if text.endswith("\ufffd"):
            return "", None
        self.text = text
        for stop in self.stop:
            at = text.find(stop, max(0, self.sent - len(stop)))
            if at != -1:
                self.text = text[:at + len(stop)] if self.include_stop else text[:at]
                return self._release(len(self.text)), stop
        return self._release(len(text) - self.holdback), None

    def flush(self) -> str:
        return self._release(len(self.text))

    def _release(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        delta = self.text[self.sent:upto]
        self.sent = upto
        return delta


def decode_text(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
    """One sequence's text (transformers types ``decode`` for batches too)."""
    return cast(str, tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens))

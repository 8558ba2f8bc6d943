"""GUARD's name rule as the logits processor reads it: no capitalised word begins inside a sentence.

A judged answer to a question about the target cannot name what the build never learnt is the target's: asked "Who
is Harry Potter's godfather?" with every elicited character forbidden, the model reaches for the next one it half
knows ("none other than Lord Lupin"). Those names start with a capital inside a sentence, so they are filtered
there; a sentence still opens as it likes ("The", "He"), and lower-case words are untouched. Engine-free, compiled
once per file per process, like the output net's table.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from pydantic import BaseModel

# what ends a sentence, after which a capital opens the next one (a token holding a line break opens one too)
_ENDS = (".", "!", "?")
_CLOSERS = "\"'”’)]* "


class NameTable(BaseModel):
    # tokens that write the start of a capitalised word (" Lupin", "Qu" of "Quirrell", " Lord")
    names: list[int]
    # tokens after which a sentence (or a line) begins: names are allowed next
    opens: list[int]


def scan_vocabulary(tokenizer) -> NameTable:
    """One scan of the served model's vocabulary. "I" is no name, nor "I'm"."""
    names: list[int] = []
    opens: list[int] = []
    for i in range(len(tokenizer)):
        text = tokenizer.decode([i])
        word = text.lstrip()
        if word[:1].isupper() and not (word == "I" or word.startswith(("I'", "I’"))):
            names.append(i)
        if text.rstrip(_CLOSERS).endswith(_ENDS) or "\n" in text:
            opens.append(i)
    return NameTable(names=names, opens=opens)


class CompiledNames:
    def __init__(self, table: NameTable) -> None:
        self.ids = torch.tensor(table.names, dtype=torch.long)
        self.opens = frozenset(table.opens)
        self._on: dict[torch.device, torch.Tensor] = {}

    def on(self, device: torch.device) -> torch.Tensor:
        if device not in self._on:
            self._on[device] = self.ids.to(device)
        return self._on[device]

    def inside_sentence(self, last: int | None) -> bool:
        """Whether the token after ``last`` (None: the answer's first) continues a sentence."""
        return last is not None and last not in self.opens


@lru_cache(maxsize=4)
def load_names(path: str) -> CompiledNames:
    return CompiledNames(NameTable.model_validate_json(Path(path).read_bytes()))

"""The output net's table as the logits processor reads it: engine-free, compiled once per file per process."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel


class NetTable(BaseModel):
    """A target's own sequences (``net_sequences``), or the replica's union with each sequence's owner."""

    target_ids: list[str]
    # (index into target_ids, token ids)
    sequences: list[tuple[int, list[int]]]
    # per sequence, the positions whose token the net filters once the tokens before it are written (empty: all)
    steps: list[list[int]] = []


class CompiledNet:
    """prefix of a forbidden sequence -> the tokens that would continue it, and whose sequences those are."""

    def __init__(self, table: NetTable) -> None:
        nexts: dict[tuple[int, ...], set[int]] = {}
        owners: dict[tuple[int, ...], set[int]] = {}
        for i, (owner, seq) in enumerate(table.sequences):
            for k in (table.steps[i] if table.steps else range(1, len(seq))):
                nexts.setdefault(tuple(seq[:k]), set()).add(seq[k])
                owners.setdefault(tuple(seq[:k]), set()).add(owner)
        self.target_ids = table.target_ids
        self.continuations = {p: tuple(sorted(n)) for p, n in nexts.items()}
        self.owners = {p: tuple(sorted(o)) for p, o in owners.items()}
        self.longest_prefix = max((len(p) for p in nexts), default=0)

    def engaged(self, output: Sequence[int], prompt: Sequence[int] = ()) -> set[str]:
        """Targets whose sequences prompt + output had begun before some output token: the steps where the net
        filtered candidates."""
        lead = list(prompt[len(prompt) - self.longest_prefix:]) if self.longest_prefix and prompt else []
        tokens = [*lead, *output]
        found: set[int] = set()
        for end in range(max(len(lead), 1), len(tokens)):
            for k in range(1, min(self.longest_prefix, end) + 1):
                owners = self.owners.get(tuple(tokens[end - k:end]))
                if owners:
                    found.update(owners)
        return {self.target_ids[i] for i in found}


@lru_cache(maxsize=4)
def load_net(path: str) -> CompiledNet:
    """Compiled once per file per process (the engine's and the gateway's); a new union is a new file."""
    return CompiledNet(NetTable.model_validate_json(Path(path).read_bytes()))

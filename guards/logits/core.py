"""The engine-free logits-processing core: per-row banned token ids applied as one indexed write.

Later interventions (GUARD's trie and semantic tables) extend this core; the adapters stay thin.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from guards.logits.rows import RowTable


class BannedTokensCore:
    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.table: RowTable[tuple[int, ...]] = RowTable()
        self._rows = torch.empty(0, dtype=torch.long, device=self.device)
        self._cols = torch.empty(0, dtype=torch.long, device=self.device)

    @staticmethod
    def parse(banned: Iterable[int] | None) -> tuple[int, ...] | None:
        if not banned:
            return None
        return tuple(sorted({int(t) for t in banned}))

    def update(self, removed: Iterable[int], added: Iterable[tuple[int, Iterable[int] | None]],
               moved: Iterable[tuple[int, int, bool]]) -> None:
        self.table.update(removed, [(i, self.parse(b)) for i, b in added], moved)
        if self.table.dirty:
            self._rebuild()

    def _rebuild(self) -> None:
        rows: list[int] = []
        cols: list[int] = []
        for row, banned in self.table.rows.items():
            rows.extend([row] * len(banned))
            cols.extend(banned)
        self._rows = torch.tensor(rows, dtype=torch.long).to(self.device, non_blocking=True)
        self._cols = torch.tensor(cols, dtype=torch.long).to(self.device, non_blocking=True)
        self.table.dirty = False

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.table:
            return logits
        logits[self._rows, self._cols] = float("-inf")
        return logits

"""Per-row state of a persistent batch, updated in the order vLLM prescribes (removed, added, moved)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class RowTable(Generic[T]):
    """Maps batch rows to per-request state; ``dirty`` tells the owner to rebuild its tensors once."""

    def __init__(self) -> None:
        self.rows: dict[int, T] = {}
        self.dirty = False

    def __bool__(self) -> bool:
        return bool(self.rows)

    def update(self, removed: Iterable[int], added: Iterable[tuple[int, T | None]],
               moved: Iterable[tuple[int, int, bool]]) -> None:
        """``moved`` holds (a, b, swap): a one-way move a -> b, or a swap when ``swap`` is true."""
        for index in removed:
            if self.rows.pop(index, None) is not None:
                self.dirty = True
        for index, state in added:
            # An added request may take the row of one that left without being listed as removed.
            if state is None:
                if self.rows.pop(index, None) is not None:
                    self.dirty = True
            else:
                self.rows[index] = state
                self.dirty = True
        for a, b, swap in moved:
            a_state = self.rows.pop(a, None)
            b_state = self.rows.pop(b, None)
            if a_state is not None:
                self.rows[b] = a_state
                self.dirty = True
            if b_state is not None:
                self.dirty = True
                if swap:
                    self.rows[a] = b_state

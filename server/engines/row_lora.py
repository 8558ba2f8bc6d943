"""Per-row LoRA for the reference engine: each row of a batch gets its own adapter at its own strength.

vLLM does this with punica's gathered kernels; here forward hooks add the deltas. A loop over the batch's adapters
would cost ``modules x adapters`` small matmuls per step (210 x 25 when RWKU's wave of O3 targets is in flight: the
per-token time was 5x the plain one), so the adapters in the batch are stacked along the rank: one ``[batch, R]``
product through every adapter's A, a mask that keeps each row's own adapter's columns times its strength (scaled
before B, as punica's shrink does), one product through the stacked B. Rows without an adapter gain an exact zero.
That wastes work on the zeroed columns, but R is small (rank x adapters) and it is three tensor ops per module
whatever the number of adapters; a row's result does not depend on the rows beside it beyond floating-point
reassociation. The common case, one flagged request among plain ones (one adapter, one run of rows, one
strength), needs no mask: the two products run on that run of rows alone, added in place. On CPU each op is a
dispatch of a few microseconds, which is what the plain rows of the batch pay for the flagged one.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from server.engines.lora import LoRAAdapter

if TYPE_CHECKING:
    from server.engines.hf_batch import BatchRow


@dataclass(frozen=True)
class _Stack:
    a_t: torch.Tensor  # [in, R]: the A matrices of the adapters that touch this module, stacked on the rank
    b_t: torch.Tensor  # [R, out]
    layout: tuple[str, ...]  # whose rank fills the columns, in order


# Stacks kept for this many distinct sets of adapters (the set changes as rows join and leave the batch). A set's
# stacks are as large as its adapters together (~10 MB an O3 adapter of the bundled model).
_STACK_CACHE = 2


class RowLoRA:
    def __init__(self, modules: dict[str, torch.nn.Module], adapters: dict[str, LoRAAdapter]) -> None:
        self.modules = modules
        self.adapters = adapters
        # adapter name -> (row indices, per-row factor)
        self.groups: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._batch = 0
        self._masks: dict[tuple[str, ...], torch.Tensor] = {}
        # key: the batch's adapter objects' identities; value: the adapters (kept alive so ids stay unique), stacks
        self._stacks: OrderedDict[tuple[int, ...], tuple[list[LoRAAdapter], dict[str, _Stack]]] = OrderedDict()
        self._current: dict[str, _Stack] = {}

    def select(self, rows: list[BatchRow]) -> None:
        """Called before every forward: the batch changes between steps."""
        groups: dict[str, tuple[list[int], list[float]]] = {}
        for i, row in enumerate(rows):
            lora = row.request.lora
            if lora is not None:
                index, factor = groups.setdefault(lora.name, ([], []))
                index.append(i)
                factor.append(self.adapters[lora.name].scaling * lora.scale)
        self.groups = {name: (torch.tensor(index, dtype=torch.long), torch.tensor(factor))
                       for name, (index, factor) in groups.items()}
        self._masks = {}
        self._batch = len(rows)
        self._current = self._stacks_for(sorted(self.groups)) if self.groups else {}
        self._span = self._one_run()

    def _one_run(self) -> tuple[int, int, float] | None:
        """(first row, end row, strength) when one adapter at one strength covers one run of rows."""
        if len(self.groups) != 1:
            return None
        (index, factor), = self.groups.values()
        lo, hi = int(index[0]), int(index[-1]) + 1
        if hi - lo != index.numel() or not bool((factor == factor[0]).all()):
            return None
        return lo, hi, float(factor[0])

    def _stacks_for(self, names: list[str]) -> dict[str, _Stack]:
        adapters = [self.adapters[n] for n in names]
        key = tuple(id(a) for a in adapters)
        hit = self._stacks.get(key)
        if hit is not None:
            self._stacks.move_to_end(key)
            return hit[1]
        stacks: dict[str, _Stack] = {}
        for module in sorted({m for a in adapters for m in a.weights}):
            have = [(n, a.weights[module]) for n, a in zip(names, adapters, strict=True) if module in a.weights]
            stacks[module] = _Stack(a_t=torch.cat([w[0] for _, w in have]).t().contiguous(),
                                    b_t=torch.cat([w[1] for _, w in have], dim=1).t().contiguous(),
                                    layout=tuple(n for n, _ in have))
        self._stacks[key] = (adapters, stacks)
        if len(self._stacks) > _STACK_CACHE:
            self._stacks.popitem(last=False)
        return stacks

    def _mask(self, layout: tuple[str, ...], dtype: torch.dtype) -> torch.Tensor:
        """[batch, 1, R]: a row's strength on its own adapter's columns, zero elsewhere."""
        mask = self._masks.get(layout)
        if mask is None:
            columns, start = {}, 0
            for name in layout:
                rank = self.adapters[name].rank
                columns[name] = (start, start + rank)
                start += rank
            mask = torch.zeros(self._batch, start, dtype=dtype)
            for name, (index, factor) in self.groups.items():
                if name in columns:
                    lo, hi = columns[name]
                    mask[index, lo:hi] = factor.view(-1, 1)
            mask = self._masks[layout] = mask.unsqueeze(1)  # [batch, 1, R]: broadcast over positions
        return mask

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        names = {m for name in self.groups for m in self.adapters[name].weights}
        handles = [self.modules[m].register_forward_hook(self._hook(m)) for m in sorted(names)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, module_name: str) -> Callable[..., None]:
        stack = self._current[module_name]
        if self._span is not None:
            lo, hi, factor = self._span

            def hook(_m: torch.nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
                x = args[0][lo:hi]
                out[lo:hi].add_(torch.matmul(torch.matmul(x, stack.a_t), stack.b_t), alpha=factor)
            return hook
        mask = self._mask(stack.layout, stack.a_t.dtype)

        def masked(_m: torch.nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            h = torch.matmul(args[0], stack.a_t).mul_(mask)
            out.add_(torch.matmul(h, stack.b_t))
        return masked

"""The engine-free GUARD core: per-row bans, forbidden-sequence filtering and semantic penalties.

Per step it does one indexed add (penalties) and one indexed write (bans), built once whenever the batch changes.
The only per-step Python is the sequence check: for each guarded row, a few dictionary lookups of the row's last
generated tokens (never a loop over the vocabulary), and for a row under the name rule, one set lookup of its last
token and one indexed fill.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from guards.logits.args import LogitsArgs
from guards.logits.name_table import CompiledNames, load_names
from guards.logits.net_table import CompiledNet, load_net
from guards.logits.rows import RowTable


@dataclass(frozen=True)
class RowRules:
    banned: tuple[int, ...]
    # the last k generated tokens -> tokens that would continue a forbidden sequence after them
    continuations: dict[tuple[int, ...], tuple[int, ...]]
    longest_prefix: int
    penalty_ids: tuple[int, ...]
    penalty_values: tuple[float, ...]
    # the output net, shared by every row that carries the same table file
    net: CompiledNet | None = None
    # GUARD's name rule: no capitalised word begins inside a sentence
    names: CompiledNames | None = None

    @classmethod
    def compile(cls, args: LogitsArgs) -> RowRules:
        nexts: dict[tuple[int, ...], set[int]] = {}
        for seq in args.sequences:
            for k in range(1, len(seq)):
                nexts.setdefault(tuple(seq[:k]), set()).add(seq[k])
        # several tokens of one sequence may repeat; keep the largest penalty per token
        penalties: dict[int, float] = {}
        for t, v in zip(args.penalty_ids, args.penalty_values, strict=True):
            penalties[t] = max(v, penalties.get(t, v))
        return cls(banned=tuple(sorted(set(args.banned_token_ids))),
                   continuations={p: tuple(sorted(n)) for p, n in nexts.items()},
                   longest_prefix=max((len(p) for p in nexts), default=0),
                   penalty_ids=tuple(penalties), penalty_values=tuple(penalties.values()),
                   net=load_net(args.net) if args.net else None,
                   names=load_names(args.names) if args.names else None)


@dataclass
class _Row:
    rules: RowRules
    # the request's generated tokens so far: a live list owned by the engine
    output: Sequence[int]
    # the prompt's last tokens: a text prompt ending in " Harry" has begun " Harry Potter" before any output
    prompt_tail: tuple[int, ...] = ()

    def tail(self, k: int) -> tuple[int, ...]:
        """The last ``k`` tokens of prompt + output (fewer at the very start)."""
        out = self.output
        if len(out) >= k:
            return tuple(out[-k:])
        return (self.prompt_tail + tuple(out))[-k:]


class GuardCore:
    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.table: RowTable[_Row] = RowTable()
        self._ban_rows = self._ban_cols = torch.empty(0, dtype=torch.long, device=self.device)
        self._pen_rows = self._pen_cols = torch.empty(0, dtype=torch.long, device=self.device)
        self._pen_values = torch.empty(0, dtype=torch.float32, device=self.device)
        self._sequence_rows: list[tuple[int, _Row]] = []
        self._name_rows: list[tuple[int, _Row]] = []

    def update(self, removed: Iterable[int],
               added: Iterable[tuple[int, LogitsArgs | None, Sequence[int]]
                               | tuple[int, LogitsArgs | None, Sequence[int], Sequence[int] | None]],
               moved: Iterable[tuple[int, int, bool]]) -> None:
        """``added``: (row, arguments, live output list[, prompt token ids, None for prompt embeddings])."""
        rows: list[tuple[int, _Row | None]] = []
        for index, args, out, *prompt in added:
            if args is None or args.is_empty():
                rows.append((index, None))
                continue
            rules = RowRules.compile(args)
            longest = max(rules.longest_prefix, rules.net.longest_prefix if rules.net is not None else 0,
                          1 if rules.names is not None else 0)
            ids = prompt[0] if prompt and prompt[0] is not None else ()
            rows.append((index, _Row(rules, out, tuple(ids[len(ids) - longest:]) if longest else ())))
        self.table.update(removed, rows, moved)
        if self.table.dirty:
            self._rebuild()

    def _tensor(self, values: list[int] | list[float], dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype).to(self.device, non_blocking=True)

    def _rebuild(self) -> None:
        ban_rows: list[int] = []
        ban_cols: list[int] = []
        pen_rows: list[int] = []
        pen_cols: list[int] = []
        pen_values: list[float] = []
        self._sequence_rows = []
        self._name_rows = []
        for index, row in sorted(self.table.rows.items()):
            rules = row.rules
            ban_rows += [index] * len(rules.banned)
            ban_cols += rules.banned
            pen_rows += [index] * len(rules.penalty_ids)
            pen_cols += rules.penalty_ids
            pen_values += rules.penalty_values
            if rules.continuations or rules.net is not None:
                self._sequence_rows.append((index, row))
            if rules.names is not None:
                self._name_rows.append((index, row))
        self._ban_rows, self._ban_cols = self._tensor(ban_rows, torch.long), self._tensor(ban_cols, torch.long)
        self._pen_rows, self._pen_cols = self._tensor(pen_rows, torch.long), self._tensor(pen_cols, torch.long)
        self._pen_values = self._tensor(pen_values, torch.float32)
        self.table.dirty = False

    def _continuations(self) -> tuple[list[int], list[int]]:
        rows: list[int] = []
        cols: list[int] = []
        for index, row in self._sequence_rows:
            rules = row.rules
            tables = [(rules.continuations, rules.longest_prefix)]
            if rules.net is not None:
                tables.append((rules.net.continuations, rules.net.longest_prefix))
            for continuations, longest in tables:
                tail = row.tail(longest)
                for k in range(1, len(tail) + 1):
                    nxt = continuations.get(tail[len(tail) - k:])
                    if nxt:
                        rows += [index] * len(nxt)
                        cols += nxt
        return rows, cols

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.table:
            return logits
        if self._pen_values.numel():
            logits.index_put_((self._pen_rows, self._pen_cols), -self._pen_values.to(logits.dtype), accumulate=True)
        if self._ban_rows.numel():
            logits[self._ban_rows, self._ban_cols] = float("-inf")
        if self._sequence_rows:
            rows, cols = self._continuations()
            if rows:
                logits[self._tensor(rows, torch.long), self._tensor(cols, torch.long)] = float("-inf")
        for index, row in self._name_rows:
            names = row.rules.names
            assert names is not None
            last = row.tail(1)
            if names.inside_sentence(last[0] if last else None):
                logits[index].index_fill_(0, names.on(logits.device), float("-inf"))
        return logits

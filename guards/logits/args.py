"""GUARD's per-request arguments (``LogitsArgs``) and their ``SamplingParams.extra_args`` form: flat int/float lists,
sequences as length-prefixed runs. Imports nothing of the server: vLLM upstreams load this package alone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

BANNED = "ugw_banned"
SEQUENCES = "ugw_sequences"
PENALTY_IDS = "ugw_penalty_ids"
PENALTY_VALUES = "ugw_penalty_values"
NET = "ugw_net"
NAMES = "ugw_names"
KEYS = (BANNED, SEQUENCES, PENALTY_IDS, PENALTY_VALUES, NET, NAMES)


class LogitsArgs(BaseModel):
    """Per-request arguments for the gateway's logits processor (GUARD); empty means it leaves the row alone.

    ``banned_token_ids`` never come out; a token that would continue one of ``sequences`` (given what the request
    generated so far) is filtered; ``penalty_ids`` lose ``penalty_values`` from their logits at every step.
    """

    model_config = ConfigDict(frozen=True)

    banned_token_ids: tuple[int, ...] = ()
    sequences: tuple[tuple[int, ...], ...] = ()
    penalty_ids: tuple[int, ...] = ()
    penalty_values: tuple[float, ...] = ()
    # the output net's table file (``guards.net``): its sequences are filtered like ``sequences``, on every request
    net: str | None = None
    # GUARD's name table file (``guards.logits.name_table``): no capitalised word begins inside a sentence
    names: str | None = None

    @model_validator(mode="after")
    def _paired(self) -> LogitsArgs:
        if len(self.penalty_ids) != len(self.penalty_values):
            raise ValueError("penalty_ids and penalty_values must have the same length")
        if any(not s for s in self.sequences):
            raise ValueError("forbidden sequences must not be empty")
        return self

    def is_empty(self) -> bool:
        return not (self.banned_token_ids or self.sequences or self.penalty_ids or self.net or self.names)

    def token_ids(self) -> list[int]:
        return [*self.banned_token_ids, *(t for s in self.sequences for t in s), *self.penalty_ids]


def to_extra_args(args: LogitsArgs) -> dict[str, list[int] | list[float] | str]:
    flat: list[int] = []
    for seq in args.sequences:
        flat += [len(seq), *seq]
    out: dict[str, list[int] | list[float] | str] = {}
    if args.banned_token_ids:
        out[BANNED] = list(args.banned_token_ids)
    if flat:
        out[SEQUENCES] = flat
    if args.penalty_ids:
        out[PENALTY_IDS] = list(args.penalty_ids)
        out[PENALTY_VALUES] = [float(v) for v in args.penalty_values]
    if args.net:
        out[NET] = args.net
    if args.names:
        out[NAMES] = args.names
    return out


def from_extra_args(extra: Mapping[str, Any] | None) -> LogitsArgs | None:
    """The request's arguments, or None when it has none; ``ValueError`` when they are malformed."""
    if not extra or not any(k in extra for k in KEYS):
        return None
    for key in (BANNED, SEQUENCES, PENALTY_IDS):
        value = extra.get(key, [])
        if not isinstance(value, list) or not all(isinstance(t, int) for t in value):
            raise ValueError(f"{key} must be a list of token ids")
    values = extra.get(PENALTY_VALUES, [])
    if not isinstance(values, list) or not all(isinstance(v, int | float) for v in values):
        raise ValueError(f"{PENALTY_VALUES} must be a list of numbers")
    net = extra.get(NET)
    if net is not None and (not isinstance(net, str) or not net):
        raise ValueError(f"{NET} must be the path of an output-net table")
    names = extra.get(NAMES)
    if names is not None and (not isinstance(names, str) or not names):
        raise ValueError(f"{NAMES} must be the path of a name table")
    flat: list[int] = extra.get(SEQUENCES, [])
    sequences: list[tuple[int, ...]] = []
    i = 0
    while i < len(flat):
        n = flat[i]
        if n <= 0 or i + 1 + n > len(flat):
            raise ValueError(f"{SEQUENCES} is not a list of length-prefixed sequences")
        sequences.append(tuple(flat[i + 1:i + 1 + n]))
        i += 1 + n
    args = LogitsArgs(banned_token_ids=tuple(extra.get(BANNED, [])), sequences=tuple(sequences),
                      penalty_ids=tuple(extra.get(PENALTY_IDS, [])), penalty_values=tuple(float(v) for v in values),
                      net=net, names=names)
    return None if args.is_empty() else args

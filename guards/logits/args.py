"""``LogitsArgs`` <-> ``SamplingParams.extra_args``: flat int/float lists, sequences as length-prefixed runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.engines.base import LogitsArgs

BANNED = "ugw_banned"
SEQUENCES = "ugw_sequences"
PENALTY_IDS = "ugw_penalty_ids"
PENALTY_VALUES = "ugw_penalty_values"
NET = "ugw_net"
KEYS = (BANNED, SEQUENCES, PENALTY_IDS, PENALTY_VALUES, NET)


def to_extra_args(args: LogitsArgs) -> dict[str, list[int] | list[float]]:
    flat: list[int] = []
    for seq in args.sequences:
        flat += [len(seq), *seq]
    out: dict[str, list[int] | list[float]] = {}
    if args.banned_token_ids:
        out[BANNED] = list(args.banned_token_ids)
    if flat:
        out[SEQUENCES] = flat
    if args.penalty_ids:
        out[PENALTY_IDS] = list(args.penalty_ids)
        out[PENALTY_VALUES] = [float(v) for v in args.penalty_values]
    if args.net:
        out[NET] = args.net
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
                      net=net)
    return None if args.is_empty() else args

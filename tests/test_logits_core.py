import pytest
import torch

from guards.logits.args import from_extra_args, to_extra_args
from guards.logits.core import GuardCore
from guards.logits.rows import RowTable
from server.engines.base import LogitsArgs


def test_row_table_applies_removed_then_added_then_moved() -> None:
    table: RowTable[str] = RowTable()
    table.update([], [(0, "a"), (1, "b"), (2, None)], [])
    assert table.rows == {0: "a", 1: "b"}
    # Row 0 leaves and a new request takes its slot in the same update; then 1 and 0 swap.
    table.update([0], [(0, "c")], [(1, 0, True)])
    assert table.rows == {0: "b", 1: "c"}
    # A one-way move overwrites the destination and empties the source.
    table.update([], [], [(0, 3, False)])
    assert table.rows == {1: "c", 3: "b"}
    # An added request without state clears whatever the row held before.
    table.update([], [(1, None)], [])
    assert table.rows == {3: "b"}


def _args(banned=(), sequences=(), penalties=None) -> LogitsArgs:
    penalties = penalties or {}
    return LogitsArgs(banned_token_ids=tuple(banned), sequences=tuple(tuple(s) for s in sequences),
                      penalty_ids=tuple(penalties), penalty_values=tuple(penalties.values()))


def test_core_bans_only_its_rows_and_leaves_empty_batches_untouched() -> None:
    core = GuardCore()
    logits = torch.zeros(3, 10)
    assert core.apply(logits) is logits and torch.count_nonzero(logits) == 0
    core.update([], [(0, _args([2, 5, 5]), []), (2, _args([9]), []), (1, None, [])], [])
    out = core.apply(torch.zeros(3, 10))
    assert torch.isinf(out[0, 2]) and torch.isinf(out[0, 5]) and torch.isinf(out[2, 9])
    assert int(torch.isinf(out).sum()) == 3
    assert not torch.isinf(out[1]).any()
    core.update([0], [], [(2, 1, False)])
    out = core.apply(torch.zeros(3, 10))
    assert torch.isinf(out[1, 9]) and int(torch.isinf(out).sum()) == 1


def test_a_token_that_would_continue_a_forbidden_sequence_is_filtered() -> None:
    core = GuardCore()
    generated: list[int] = []
    core.update([], [(0, _args(sequences=[[4, 5, 6], [7, 5, 8]]), generated)], [])
    assert not torch.isinf(core.apply(torch.zeros(1, 10))).any()  # nothing generated yet: nothing to continue
    generated.append(4)  # the engine appends in place; the core reads the live list
    out = core.apply(torch.zeros(1, 10))
    assert torch.isinf(out[0]).nonzero().flatten().tolist() == [5]
    generated.append(5)  # (the model took another path to 5, e.g. the ban was a penalty elsewhere)
    out = core.apply(torch.zeros(1, 10))
    assert torch.isinf(out[0]).nonzero().flatten().tolist() == [6]
    generated[:] = [7, 5]
    assert torch.isinf(core.apply(torch.zeros(1, 10))[0]).nonzero().flatten().tolist() == [8]


def test_semantic_penalties_are_subtracted_once_per_token() -> None:
    core = GuardCore()
    core.update([], [(1, _args(penalties={3: 2.0, 7: 0.5}), [])], [])
    out = core.apply(torch.ones(2, 10))
    assert out[1, 3] == -1.0 and out[1, 7] == 0.5
    assert torch.equal(out[0], torch.ones(10)) and int((out[1] != 1).sum()) == 2


def test_extra_args_round_trip_and_reject_malformed_values() -> None:
    args = _args([1, 2], [[3, 4], [5, 6, 7]], {8: 1.5})
    extra = to_extra_args(args)
    assert all(isinstance(v, list) for v in extra.values())
    assert from_extra_args(extra) == args
    assert from_extra_args({}) is None and from_extra_args({"other": 1}) is None
    with pytest.raises(ValueError):
        from_extra_args({"ugw_sequences": [3, 1, 2]})  # says 3 tokens, has 2
    with pytest.raises(ValueError):
        from_extra_args({"ugw_banned": ["a"]})


def test_hf_adapter_matches_core() -> None:
    from guards.logits.hf_adapter import GatewayHFLogitsProcessor

    proc = GatewayHFLogitsProcessor([_args([1, 3])], [[]], [None])
    scores = torch.randn(1, 6)
    before = scores.clone()
    out = proc(torch.zeros(1, 0, dtype=torch.long), scores)
    assert torch.isinf(out[0, [1, 3]]).all()
    keep = [0, 2, 4, 5]
    assert torch.equal(out[0, keep], before[0, keep])


def test_the_output_net_filters_only_continuations_of_started_sequences(tmp_path) -> None:
    from guards.logits.net_table import NetTable, load_net

    path = tmp_path / "net.json"
    path.write_text(NetTable(target_ids=["hp", "sk"], sequences=[(0, [5, 6, 7]), (1, [8, 9])]).model_dump_json())
    net = LogitsArgs(net=str(path))
    assert from_extra_args(to_extra_args(net)) == net and not net.is_empty()
    core = GuardCore()
    outputs: list[list[int]] = [[1, 2], [4, 5], [5, 6], [8]]
    core.update([], [(i, net, out) for i, out in enumerate(outputs)], [])
    logits = torch.randn(4, 12)
    out = core.apply(logits.clone())
    assert torch.equal(out[0], logits[0])  # no sequence started: the row is untouched
    assert torch.isinf(out[1, 6]) and int(torch.isinf(out[1]).sum()) == 1
    assert torch.isinf(out[2, 7]) and int(torch.isinf(out[2]).sum()) == 1
    assert torch.isinf(out[3, 9]) and int(torch.isinf(out[3]).sum()) == 1
    compiled = load_net(str(path))
    assert compiled.engaged([1, 5, 2, 8, 3]) == {"hp", "sk"} and compiled.engaged([1, 2, 6, 9]) == set()
    with pytest.raises(ValueError, match="ugw_net"):
        from_extra_args({"ugw_net": 3})


def test_a_sequence_the_prompt_began_is_cut_at_the_first_output_token(tmp_path) -> None:
    from guards.logits.net_table import NetTable, load_net

    path = tmp_path / "net.json"
    path.write_text(NetTable(target_ids=["hp"], sequences=[(0, [5, 6, 7])]).model_dump_json())
    core = GuardCore()
    output: list[int] = []
    core.update([], [(0, LogitsArgs(net=str(path)), output, [1, 2, 5]),
                     (1, LogitsArgs(sequences=((3, 4),)), [], [9, 3]), (2, LogitsArgs(net=str(path)), [], None)], [])
    out = core.apply(torch.zeros(3, 10))
    assert torch.isinf(out[0, 6]) and torch.isinf(out[1, 4]) and not torch.isinf(out[2]).any()
    output += [6]
    out = core.apply(torch.zeros(3, 10))
    assert torch.isinf(out[0, 7]) and int(torch.isinf(out[0]).sum()) == 1
    assert load_net(str(path)).engaged([6, 1], prompt=[1, 5]) == {"hp"}
    assert load_net(str(path)).engaged([1, 6], prompt=[5, 2]) == set()

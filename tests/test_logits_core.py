import torch

from guards.logits.core import BannedTokensCore
from guards.logits.rows import RowTable


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


def test_banned_tokens_core_bans_only_its_rows_and_leaves_empty_batches_untouched() -> None:
    core = BannedTokensCore()
    logits = torch.zeros(3, 10)
    assert core.apply(logits) is logits and torch.count_nonzero(logits) == 0
    core.update([], [(0, [2, 5, 5]), (2, [9]), (1, None)], [])
    out = core.apply(torch.zeros(3, 10))
    assert torch.isinf(out[0, 2]) and torch.isinf(out[0, 5]) and torch.isinf(out[2, 9])
    assert int(torch.isinf(out).sum()) == 3
    assert not torch.isinf(out[1]).any()
    core.update([0], [], [(2, 1, False)])
    out = core.apply(torch.zeros(3, 10))
    assert torch.isinf(out[1, 9]) and int(torch.isinf(out).sum()) == 1


def test_hf_adapter_matches_core() -> None:
    from guards.logits.hf_adapter import GatewayHFLogitsProcessor

    proc = GatewayHFLogitsProcessor([[1, 3]])
    scores = torch.randn(1, 6)
    before = scores.clone()
    out = proc(torch.zeros(1, 0, dtype=torch.long), scores)
    assert torch.isinf(out[0, [1, 3]]).all()
    keep = [0, 2, 4, 5]
    assert torch.equal(out[0, keep], before[0, keep])

"""The masked LoRA ops equal vLLM's own for rows with an adapter and add nothing for rows without one."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from guards import vllm_lora_fix as fix

lora_ops = pytest.importorskip("vllm.lora.ops.torch_ops.lora_ops", reason="vllm is not installed")


def _case(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(5, 6, generator=g)
    a = torch.randn(3, 1, 4, 6, generator=g)  # 3 slots, rank 4, in 6
    b = torch.randn(3, 1, 8, 4, generator=g)  # out 8
    return x, a, b


def test_matches_upstream_on_adapted_rows_and_zero_on_plain_rows() -> None:
    x, a, b = _case()
    idx = torch.tensor([0, 2, -1, 1, -1])
    mine = torch.zeros(5, 4)
    fix.bgmv_shrink(x, a, mine, idx, 0.5)
    theirs = torch.zeros(5, 4)
    lora_ops.bgmv_shrink(x, a, theirs, idx.clamp(min=0), 0.5)
    adapted = idx >= 0
    assert torch.equal(mine[adapted], theirs[adapted])
    assert torch.count_nonzero(mine[~adapted]) == 0

    base = torch.randn(5, 8)
    out_mine, out_theirs = base.clone(), base.clone()
    fix.bgmv_expand(mine, b, out_mine, idx, add_inputs=True)
    lora_ops.bgmv_expand(theirs, b, out_theirs, idx.clamp(min=0), add_inputs=True)
    assert torch.equal(out_mine[adapted], out_theirs[adapted])
    assert torch.equal(out_mine[~adapted], base[~adapted]), "rows without a LoRA must stay bit-identical"

    sliced = base.clone()
    fix.bgmv_expand_slice(mine, b[:, :, :4], sliced, idx, 2, 4, add_inputs=True)
    assert torch.equal(sliced[~adapted], base[~adapted])


def test_probe_tells_buggy_from_fixed_ops() -> None:
    assert not fix.leaks_into_unadapted_rows(fix.bgmv_shrink)


def _fused_case(seed: int = 1):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    slots, rank, d_in, widths = 3, 4, 6, (5, 2, 2)  # a fused qkv-like projection of three slices
    a = tuple(torch.randn(slots, 1, rank, d_in, generator=g) for _ in widths)
    b = tuple(torch.randn(slots, 1, w, rank, generator=g) for w in widths)
    a[1][1, 0, 2:] = 0.0  # vLLM pads a lower-rank adapter with zero rows
    x = torch.randn(6, d_in, generator=g)
    base = torch.randn(6, sum(widths), generator=g)
    return a, b, x, base, widths


@pytest.mark.parametrize("slots", [[2, -1, 0, 0, -1, 1],  # several slots: the masked product
                                   [-1, 1, 1, 1, -1, -1],  # one slot over one run of tokens: those rows alone
                                   [1, -1, 1, -1, -1, -1],  # one slot, split runs: masked again
                                   [0, 0, 0, 0, 0, 0]])
def test_masked_linear_equals_each_rows_own_adapter_and_leaves_plain_rows_alone(slots: list[int]) -> None:
    a, b, x, base, widths = _fused_case()
    idx = torch.tensor(slots)
    batch = fix.BatchSlots(idx)
    assert (batch.span is not None) == (slots in ([-1, 1, 1, 1, -1, -1], [0] * 6))
    out = base.clone()
    fix.masked_lora_linear(out, x, a, b, batch, 0.5, widths, fix.StackedLoRA())

    for row, slot in enumerate(idx.tolist()):
        if slot < 0:
            assert torch.equal(out[row], base[row]), "rows without a LoRA must stay bit-identical"
            continue
        want = torch.cat([0.5 * b_[slot, 0] @ (a_[slot, 0] @ x[row]) for a_, b_ in zip(a, b, strict=True)])
        torch.testing.assert_close(out[row], base[row] + want)
    assert fix.active_slots(torch.tensor([-1, -1])) == ()


def test_head_lora_is_skipped_only_while_the_active_slots_have_no_head_weights() -> None:
    head_b = torch.zeros(3, 1, 10, 4)  # [slots, 1, vocab, rank], what the LM head's LoRA holds
    seen: dict[tuple[int, ...], bool] = {}
    assert not fix.any_live(head_b, (0, 2), seen)
    head_b[2, 0, 3, 1] = 1.0  # an adapter that does train the head lands in slot 2
    assert fix.any_live(head_b, (0, 2), seen) and not fix.any_live(head_b, (0, 1), seen)


def test_stacked_weights_follow_in_place_writes() -> None:
    a, b = (torch.zeros(2, 1, 4, 3),), (torch.zeros(2, 1, 5, 4),)
    stacked = fix.StackedLoRA()
    assert stacked(a, b, (5,), (1,))[2] == (), "an empty slot has no live rows"
    a[0][1, 0, :2].fill_(1.0)  # what set_lora does to a slot: a rank-2 adapter
    b[0][1, 0, :, :2].fill_(1.0)
    a_rows, b_rows, layout = stacked(a, b, (5,), (1,))
    assert a_rows.shape == (3, 2) and torch.count_nonzero(b_rows) == 10 and layout == (1, 1)


def test_a_batch_builds_each_modules_stack_once_and_a_new_mapping_sees_new_weights() -> None:
    a, b, x, base, widths = _fused_case()
    stacked = fix.StackedLoRA()
    batch = fix.BatchSlots(torch.tensor([-1, 1, 1, -1, -1, -1]))
    first = batch.stack(a, b, widths, stacked)
    assert batch.stack(a, b, widths, stacked) is first, "one lookup a module and step, not a rebuild"
    a[0][1, 0].mul_(2.0)  # vLLM rewrites a slot only before it remaps, which makes a new BatchSlots
    again = fix.BatchSlots(torch.tensor([-1, 1, 1, -1, -1, -1])).stack(a, b, widths, stacked)
    assert not torch.equal(again[0], first[0])
    out = base.clone()
    fix.masked_lora_linear(out, x, a, b, fix.BatchSlots(torch.tensor([-1, 1, 1, -1, -1, -1])), 1.0, widths, stacked)
    want = torch.cat([b_[1, 0] @ (a_[1, 0] @ x[1]) for a_, b_ in zip(a, b, strict=True)])
    torch.testing.assert_close(out[1], base[1] + want)
    assert torch.equal(out[0], base[0])


@pytest.mark.vllm
def test_the_upstream_plugin_imports_nothing_of_the_server() -> None:
    """What a stock vLLM server loads from the package's entry points (the logits processor and this general
    plugin) must run in vLLM's image with the gateway installed ``--no-deps``."""
    code = ("import sys, guards.logits.vllm_adapter, guards.vllm_lora_fix; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'server', 'classifiers', 'loadtest'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"

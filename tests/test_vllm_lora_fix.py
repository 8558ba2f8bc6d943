"""The masked LoRA ops equal vLLM's own for rows with an adapter and add nothing for rows without one."""

from __future__ import annotations

import pytest
import torch

from server.engines import vllm_lora_fix as fix

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

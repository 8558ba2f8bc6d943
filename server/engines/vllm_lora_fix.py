"""vLLM general plugin: stop no-LoRA rows from picking up an adapter on the CPU backend.

vLLM marks tokens of requests without a LoRA with index -1. The CUDA kernels skip them, but the pure-PyTorch ops
used on CPU (``vllm/lora/ops/torch_ops/lora_ops.py``, up to at least 0.32) gather ``weights[-1]``, i.e. the *last*
adapter slot, so a plain request batched next to a LoRA request gets that adapter applied (upstream
vllm-project/vllm#48421, still open). For an unlearning server that means an unflagged request is silently
"unlearned". This plugin, loaded by vLLM in every process through the ``vllm.general_plugins`` entry point,
replaces the three gather ops with masked ones, and only when a probe shows the installed vLLM has the bug.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


def _masked_delta(inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor,
                  dtype: torch.dtype) -> torch.Tensor:
    """Per-row ``weights[index] @ x``, and exactly zero for rows whose index is -1 (no LoRA)."""
    valid = indices >= 0
    selected = weights[indices.clamp(min=0)].to(dtype=dtype)
    if selected.dim() == 4:
        selected = selected.squeeze(dim=1)
    outputs = torch.einsum("bi, boi -> bo", inputs.to(dtype=dtype), selected)
    return outputs.masked_fill(~valid[:, None], 0.0)


def bgmv_shrink(inputs: torch.Tensor, lora_a_weights: torch.Tensor, output_tensor: torch.Tensor,
                lora_indices_tensor: torch.Tensor, scaling: float = 1.0) -> None:
    outputs = _masked_delta(inputs, lora_a_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs[:]


def bgmv_expand(inputs: torch.Tensor, lora_b_weights: torch.Tensor, output_tensor: torch.Tensor,
                lora_indices_tensor: torch.Tensor, add_inputs: bool = True) -> None:
    outputs = _masked_delta(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    common = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :common] += outputs[:limit, :common]
    else:
        output_tensor[:, :common] = outputs[:limit, :common]


def bgmv_expand_slice(inputs: torch.Tensor, lora_b_weights: torch.Tensor, output_tensor: torch.Tensor,
                      lora_indices_tensor: torch.Tensor, slice_offset: int, slice_size: int,
                      add_inputs: bool = True) -> None:
    outputs = _masked_delta(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset: slice_offset + slice_size] += outputs[:]
    else:
        output_tensor[:, slice_offset: slice_offset + slice_size] = outputs[:]


def leaks_into_unadapted_rows(shrink) -> bool:  # type: ignore[no-untyped-def]
    """Run a shrink op on one adapter slot and one row marked -1: a correct op leaves that row at zero."""
    weights = torch.ones(1, 1, 2, 3)
    out = torch.zeros(1, 2)
    shrink(torch.ones(1, 3), weights, out, torch.tensor([-1]), 1.0)
    return bool(out.abs().sum() > 0)


def register() -> None:
    try:
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:  # a vLLM without these modules has nothing to fix
        return
    if getattr(lora_ops, "_ugw_patched", False) or not leaks_into_unadapted_rows(lora_ops.bgmv_shrink):
        return
    for module in (lora_ops, punica_cpu):
        for name, fn in (("bgmv_shrink", bgmv_shrink), ("bgmv_expand", bgmv_expand),
                         ("bgmv_expand_slice", bgmv_expand_slice)):
            if hasattr(module, name):
                setattr(module, name, fn)
    lora_ops._ugw_patched = True  # type: ignore[attr-defined]
    logger.info("patched vLLM's CPU LoRA ops so that requests without a LoRA get none (vllm#48421)")

"""vLLM general plugin: stop no-LoRA rows from picking up an adapter on the CPU backend.

vLLM marks tokens of requests without a LoRA with index -1. The CUDA kernels skip them, but the pure-PyTorch ops
used on CPU (``vllm/lora/ops/torch_ops/lora_ops.py``, up to at least 0.32) gather ``weights[-1]``, i.e. the *last*
adapter slot, so a plain request batched next to a LoRA request gets that adapter applied (upstream
vllm-project/vllm#48421, still open). For an unlearning server that means an unflagged request is silently
"unlearned". This plugin, loaded by vLLM in every process through the ``vllm.general_plugins`` entry point,
replaces the three gather ops with masked ones, and only when a probe shows the installed vLLM has the bug.

Second fix: with ``enable_lora`` the token-embedding layer adds an embedding-LoRA delta for every token of the
batch, but a request that arrives as prompt embeddings (ECO) has no token ids, so in a batch that mixes one with a
LoRA request the layer sees fewer ids than LoRA indices and the engine dies (einsum size mismatch). Adapters that
carry no embedding weights (all of the gateway's) add exactly zero there, so until one that does is loaded the
layer skips the delta.
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


def _skip_empty_embedding_lora() -> None:
    from vllm.lora.layers.vocab_parallel_embedding import VocabParallelEmbeddingWithLoRA as Layer

    if getattr(Layer, "_ugw_patched", False):
        return
    original_forward, original_set = Layer.forward, Layer.set_lora

    def set_lora(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._ugw_has_embedding_lora = True
        return original_set(self, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
        if not getattr(self, "_ugw_has_embedding_lora", False):
            return self.base_layer.forward(x)
        return original_forward(self, x)

    Layer.set_lora, Layer.forward = set_lora, forward
    Layer._ugw_patched = True  # type: ignore[attr-defined]


def register() -> None:
    try:
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:  # a vLLM without these modules has nothing to fix
        return
    try:
        _skip_empty_embedding_lora()
    except ImportError:
        pass
    if getattr(lora_ops, "_ugw_patched", False) or not leaks_into_unadapted_rows(lora_ops.bgmv_shrink):
        return
    for module in (lora_ops, punica_cpu):
        for name, fn in (("bgmv_shrink", bgmv_shrink), ("bgmv_expand", bgmv_expand),
                         ("bgmv_expand_slice", bgmv_expand_slice)):
            if hasattr(module, name):
                setattr(module, name, fn)
    lora_ops._ugw_patched = True  # type: ignore[attr-defined]
    logger.info("patched vLLM's CPU LoRA ops so that requests without a LoRA get none (vllm#48421)")

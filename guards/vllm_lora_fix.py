"""vLLM general plugin: LoRA on the CPU backend that leaves no-LoRA rows alone and costs them little.

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

Third, speed: vLLM V1 always takes the "prefill" path on CPU, which expands the slot index to every token and
gathers a full ``[tokens, out, rank]`` weight copy per projection, so one O3 request slowed its whole batch
(``loadtest decode-cost``: +62% per token for the plain rows) and a 600-token LoRA prefill took seconds.
``masked_lora_linear`` does each LoRA-wrapped module as one product pair over the live rank rows of the slots the
batch uses (``StackedLoRA``), each token masked to its own slot in between (or, for one flagged request, over its
rows alone), so the cost no longer scales with tokens x output width. And the LM head, which vLLM wraps whenever
LoRA is on, skips its per-step ``[rows, vocab, rank]`` gather while no active adapter trains the head (none of the
gateway's do): that alone was ~10% of every step, plain batches included. Last, each wrapped linear runs its base
layer's forward and then the product (``_lean_lora_forwards``): vLLM's wrapper chain around them cost every step,
plain ones included, ~6% against a bare engine.
"""

from __future__ import annotations

import logging
import operator
from collections import OrderedDict

import torch

logger = logging.getLogger(__name__)
_version = operator.attrgetter("_version")  # bumped by every in-place write to a tensor


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


class StackedLoRA:
    """A LoRA-wrapped module's adapters in use as two plain matrices, rebuilt only when vLLM rewrites its slots.

    ``a``: the live rank rows of every slice's active slots, stacked and transposed, ``[in, rows]``; ``b``: the matching
    block-diagonal ``[rows, out]``; ``layout``: the slot each row belongs to. vLLM pads every adapter to
    ``max_lora_rank`` and keeps ``max_loras`` slots, so leaving out idle slots and zero rows makes a rank-8 adapter
    in a 4-slot, rank-16 engine read an eighth of the weights. The stacked tensors live as long as the engine and
    ``set_lora``/``reset_lora`` write them in place, which bumps their version counter, so (address, version)
    identifies the contents.
    """

    def __init__(self, per_module: int = 4) -> None:
        # id(lora_a) -> (lora_a itself, versions, active slots -> stacks); ~120 lookups a step, so kept cheap
        self._cache: dict[int, tuple[tuple[torch.Tensor, ...], tuple[int, ...], OrderedDict]] = {}
        self._per_module = per_module

    def __call__(self, lora_a: tuple[torch.Tensor, ...], lora_b: tuple[torch.Tensor, ...], widths: tuple[int, ...],
                 active: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
        versions = tuple(map(_version, lora_a + lora_b))
        entry = self._cache.get(id(lora_a))
        if entry is None or entry[0] is not lora_a or entry[1] != versions:
            entry = (lora_a, versions, OrderedDict())
            self._cache[id(lora_a)] = entry
        built = entry[2]
        stack = built.get(active)
        if stack is None:
            stack = built[active] = self._build(lora_a, lora_b, widths, active)
            while len(built) > self._per_module:
                built.popitem(last=False)
        return stack

    @staticmethod
    def _build(lora_a: tuple[torch.Tensor, ...], lora_b: tuple[torch.Tensor, ...], widths: tuple[int, ...],
               active: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
        a_rows, b_blocks, layout = [], [], []
        offset = 0
        for a, b, width in zip(lora_a, lora_b, widths, strict=True):
            for slot in active:
                live = a[slot, 0].abs().sum(dim=1) > 0
                rows = int(live.sum())
                a_rows.append(a[slot, 0][live])
                block = b.new_zeros(rows, sum(widths))
                block[:, offset:offset + width] = b[slot, 0, :width][:, live].t()
                b_blocks.append(block)
                layout += [slot] * rows
            offset += width
        return torch.cat(a_rows).t().contiguous(), torch.cat(b_blocks), tuple(layout)


def active_slots(token_indices: torch.Tensor) -> tuple[int, ...]:
    """The adapter slots some token of the batch uses (-1 marks a token without one)."""
    return tuple(int(i) for i in torch.unique(token_indices[token_indices >= 0]))


class BatchSlots:
    """Which adapter slot each token of the batch uses, and what every module's product needs from that.

    vLLM rewrites the token-to-slot mapping only when the batch changes, but calls the LoRA product for some 120
    modules a step; on CPU each tensor op is a dispatch of a few microseconds, which is what the plain rows of a
    mixed batch pay. So the per-token masks are built here once per mapping and row layout, and when the batch uses
    one slot over one run of tokens (the common case: one flagged request), the product runs on that run's rows
    alone and needs no mask at all.
    """

    def __init__(self, token_slots: torch.Tensor) -> None:
        self.tokens = token_slots
        # id(lora_a) -> its stack for this batch's slots. vLLM reruns ``update_metadata`` (and so makes a new
        # BatchSlots) whenever the mapping or the slot layout changes, and writes slots only before that, so within
        # one BatchSlots a module's stack cannot go stale; the version check in StackedLoRA then runs once per module
        # and mapping instead of once per module and step (~1.5 us of the ~18 a module costs in the engine).
        self._stacks: dict[int, tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]] = {}
        self.active = active_slots(token_slots)
        self.span: tuple[int, int] | None = None
        if len(self.active) == 1:
            rows = torch.nonzero(token_slots == self.active[0]).flatten()
            lo, hi = int(rows[0]), int(rows[-1]) + 1
            if hi - lo == rows.numel():
                self.span = (lo, hi)
        self._masks: dict[tuple[int, ...], torch.Tensor] = {}

    def covers(self, x: torch.Tensor, lora_a: tuple[torch.Tensor, ...]) -> bool:
        """Whether ``masked_lora_linear`` can serve this call: one slot entry per token, slots within the layer's."""
        return self.tokens.shape[0] == x.numel() // x.shape[-1] and (not self.active
                                                                     or self.active[-1] < lora_a[0].shape[0])

    def stack(self, lora_a: tuple[torch.Tensor, ...], lora_b: tuple[torch.Tensor, ...], widths: tuple[int, ...],
              stacked: StackedLoRA) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
        found = self._stacks.get(id(lora_a))
        if found is None:
            found = self._stacks[id(lora_a)] = stacked(lora_a, lora_b, widths, self.active)
        return found

    def mask(self, layout: tuple[int, ...]) -> torch.Tensor:
        """``[tokens, rows]``: 1 where the token's slot owns the stacked rank row, else 0."""
        mask = self._masks.get(layout)
        if mask is None:
            mask = self.tokens[:, None] == torch.tensor(layout, dtype=self.tokens.dtype)[None, :]
            self._masks[layout] = mask
        return mask


def masked_lora_linear(y: torch.Tensor, x: torch.Tensor, lora_a: tuple[torch.Tensor, ...],
                       lora_b: tuple[torch.Tensor, ...], batch: BatchSlots, scale: float,
                       output_slices: tuple[int, ...], stacked: StackedLoRA) -> None:
    """``y[t, slice] += scale * B[slot(t)] A[slot(t)] x[t]``, and exactly ``+0`` for tokens without a slot.

    Two or three small ops per module whatever the slots and slices: the cost for a batch's plain rows is a few
    dispatches, not a per-token weight gather.
    """
    x2 = x if x.dim() == 2 else x.reshape(-1, x.shape[-1])
    y2 = y if y.dim() == 2 else y.view(-1, y.shape[-1])
    a_t, b, layout = batch.stack(lora_a, lora_b, output_slices, stacked)
    if not layout:  # no adapter in use touches this module
        return
    if b.shape[1] != y2.shape[1]:
        y2 = y2[:, :b.shape[1]]
    if batch.span is not None:
        lo, hi = batch.span
        y2[lo:hi].addmm_(torch.mm(x2[lo:hi], a_t), b, alpha=scale)
    else:
        y2.addmm_(torch.mm(x2, a_t).mul_(batch.mask(layout)), b, alpha=scale)


def any_live(weights: torch.Tensor, active: tuple[int, ...], seen: dict[tuple[int, ...], bool]) -> bool:
    """Whether an active slot holds non-zero weights, cached by (address, version, slots)."""
    key = (weights.data_ptr(), weights._version, *active)
    live = seen.get(key)
    if live is None:
        live = bool(any(weights[slot].any() for slot in active))
        seen[key] = live
    return live


def _fast_cpu_linear() -> None:
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU as Wrapper

    if getattr(Wrapper, "_ugw_fast", False):
        return
    original_update, original_linear = Wrapper.update_metadata, Wrapper.add_lora_linear
    original_logits = Wrapper.add_lora_logits

    def update_metadata(self, mapping, lora_index_to_id, max_loras, vocab_size, **kwargs):
        original_update(self, mapping, lora_index_to_id, max_loras, vocab_size, **kwargs)
        self._ugw_batch = BatchSlots(self.token_lora_indices.clone())
        self._ugw_sampled = active_slots(self.sampler_indices)
        if not hasattr(self, "_ugw_stacked"):
            self._ugw_stacked = StackedLoRA()
            self._ugw_live: dict[tuple[int, ...], bool] = {}

    def add_lora_linear(self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, **kwargs):
        batch = getattr(self, "_ugw_batch", None)
        if batch is not None and batch.active == ():  # no token of this batch has an adapter
            return None
        if batch is None or not batch.covers(x, lora_a_stacked):
            return original_linear(self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, **kwargs)
        masked_lora_linear(y, x, lora_a_stacked, lora_b_stacked, batch, scale, output_slices, self._ugw_stacked)
        return None

    def add_lora_logits(self, y, x, lora_a_stacked, lora_b_stacked, scale, **kwargs):
        # The LM head is wrapped whenever LoRA is on, and its op gathers a [rows, vocab, rank] copy of the weights
        # every step; the gateway's adapters never train the head, so that copy multiplies zeros.
        sampled = getattr(self, "_ugw_sampled", None)
        if sampled is not None and (sampled == () or not any_live(lora_b_stacked, sampled, self._ugw_live)):
            return None
        return original_logits(self, y, x, lora_a_stacked, lora_b_stacked, scale, **kwargs)

    patch_attributes(Wrapper, update_metadata=update_metadata, add_lora_linear=add_lora_linear,
           add_lora_logits=add_lora_logits, _ugw_fast=True)


def _lean_lora_forwards() -> None:
    """Each LoRA-wrapped linear runs its base layer's own forward, then (if the batch has an adapter) the product.

    vLLM's wrapper forward reaches every attribute of the base layer through ``__getattr__`` and a generic apply
    chain around its LoRA product: ~1,000 lookups a step for the bundled model, paid by every batch, plain ones
    included, which made a plain batch on a LoRA-enabled engine ~6% slower per token than on a bare one
    (``loadtest decode-cost``: ``plain`` against ``unguarded``). The base forward is what a bare engine runs, and on
    one device the LoRA delta is then added to its output exactly where vLLM adds it (after the bias, in place), so
    the result is the same computation with the wrapper's overhead left out. Anything else (tensor parallelism, a
    batch ``masked_lora_linear`` does not cover, another platform's wrapper) takes vLLM's own forward.
    """
    from vllm.lora.layers import ColumnParallelLinearWithLoRA, ReplicatedLinearWithLoRA, RowParallelLinearWithLoRA

    # The forwards that only wrap the base layer's; the merged, QKV and sharded variants inherit them.
    for cls in (ColumnParallelLinearWithLoRA, RowParallelLinearWithLoRA, ReplicatedLinearWithLoRA):
        original = vars(cls)["forward"]
        if getattr(original, "_ugw_lean", False):
            continue

        def forward(self, input_, _original=original):
            # The base layer is a submodule, so self.base_layer misses the instance dict and goes through
            # BaseLayerWithLoRA.__getattr__ (~1 us a time); the plain attributes below are found directly.
            own = self.__dict__
            wrapper = own.get("punica_wrapper")
            batch: BatchSlots | None = getattr(wrapper, "_ugw_batch", None)
            if batch is None or own.get("tp_size", 1) != 1:
                return _original(self, input_)
            base = own["_modules"]["base_layer"]
            # This module's own call already ran nn.Module's machinery; the base layer's forward is what a bare
            # engine's call of it ends in, unless something hooked it.
            run = base if base._forward_hooks or base._forward_pre_hooks else base.forward
            if batch.active == ():
                return run(input_)
            if not batch.covers(input_, self.lora_a_stacked):
                return _original(self, input_)
            out = run(input_)
            masked_lora_linear(out[0] if isinstance(out, tuple) else out, input_, self.lora_a_stacked,
                               self.lora_b_stacked, batch, 1.0, self.output_slices, wrapper._ugw_stacked)
            return out

        patch_attributes(forward, _ugw_lean=True)
        patch_attributes(cls, forward=forward)


def leaks_into_unadapted_rows(shrink) -> bool:
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

    def set_lora(self, *args, **kwargs):
        self._ugw_has_embedding_lora = True
        return original_set(self, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not getattr(self, "_ugw_has_embedding_lora", False):
            return self.base_layer.forward(x)
        return original_forward(self, x)

    patch_attributes(Layer, set_lora=set_lora, forward=forward, _ugw_patched=True)


def patch_attributes(owner: object, **attributes: object) -> None:
    """Monkeypatching is this module's purpose: one place sets vLLM's attributes, and the markers that say a class
    or module is already patched (a second ``register`` call, from another engine in the process, is a no-op)."""
    for name, value in attributes.items():
        setattr(owner, name, value)


def register() -> None:
    try:
        from vllm.lora.ops.torch_ops import lora_ops
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:  # a vLLM without these modules has nothing to fix
        return
    try:
        _skip_empty_embedding_lora()
        _fast_cpu_linear()
        _lean_lora_forwards()
    except ImportError:
        pass
    if getattr(lora_ops, "_ugw_patched", False) or not leaks_into_unadapted_rows(lora_ops.bgmv_shrink):
        return
    for module in (lora_ops, punica_cpu):
        for name, fn in (("bgmv_shrink", bgmv_shrink), ("bgmv_expand", bgmv_expand),
                         ("bgmv_expand_slice", bgmv_expand_slice)):
            if hasattr(module, name):
                patch_attributes(module, **{name: fn})
    patch_attributes(lora_ops, _ugw_patched=True)
    logger.info("patched vLLM's CPU LoRA ops so that requests without a LoRA get none (vllm#48421)")

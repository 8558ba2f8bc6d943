"""One batch of the reference engine: requests prefilled together (left-padded) and decoded in lock step.

The engine collects whatever is queued (up to ``max_num_seqs``) into a batch and runs it to the end; requests that
arrive meanwhile wait for the next batch. Rows that finish are dropped from the KV cache, so a long request does not
keep paying for short ones. Per row, everything matches the single-request path: its own sampler and seed, its own
GUARD rules, its own LoRA adapter at its own strength (applied by forward hooks to the rows that chose it only).
A batch of one is not padded and runs exactly the single-request computation, which the differential tests against
vLLM rely on; padded rows agree with it up to floating-point reassociation.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from guards.logits.hf_adapter import GatewayHFLogitsProcessor
from server.engines.base import EngineOutput, EngineRequest, FinishReason
from server.engines.detokenize import IncrementalDetokenizer
from server.engines.lora import LoRAAdapter
from server.engines.sampling import TokenSampler


@dataclass
class Job:
    request: EngineRequest
    loop: asyncio.AbstractEventLoop
    outputs: asyncio.Queue[EngineOutput | BaseException]
    cancelled: threading.Event = field(default_factory=threading.Event)

    def emit(self, item: EngineOutput | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.outputs.put_nowait, item)


@dataclass
class BatchRow:
    job: Job
    sampler: TokenSampler
    detok: IncrementalDetokenizer
    output_ids: list[int] = field(default_factory=list)

    @property
    def request(self) -> EngineRequest:
        return self.job.request


class RowLoRA:
    """Forward hooks that add each adapter's delta to the rows that selected it, each at its own strength."""

    def __init__(self, modules: dict[str, torch.nn.Module], adapters: dict[str, LoRAAdapter]) -> None:
        self.modules = modules
        self.adapters = adapters
        # adapter name -> (row indices, per-row factor)
        self.groups: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def select(self, rows: list[BatchRow]) -> None:
        groups: dict[str, tuple[list[int], list[float]]] = {}
        for i, row in enumerate(rows):
            lora = row.request.lora
            if lora is not None:
                index, factor = groups.setdefault(lora.name, ([], []))
                index.append(i)
                factor.append(self.adapters[lora.name].scaling * lora.scale)
        self.groups = {name: (torch.tensor(index, dtype=torch.long), torch.tensor(factor))
                       for name, (index, factor) in groups.items()}

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        names = {m for name in self.groups for m in self.adapters[name].weights}
        handles = [self.modules[m].register_forward_hook(self._hook(m)) for m in sorted(names)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, module_name: str) -> Callable[..., torch.Tensor]:
        def hook(_m: torch.nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor:
            x = args[0]
            for name, (index, factor) in self.groups.items():
                weights = self.adapters[name].weights.get(module_name)
                if weights is None:
                    continue
                a, b = weights
                delta = ((x[index] @ a.T) @ b.T) * factor.to(x.dtype).view(-1, 1, 1)
                out = out.index_add(0, index, delta.to(out.dtype))
            return out
        return hook


def _left_mask(lengths: list[int]) -> torch.Tensor:
    width = max(lengths)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, width - n:] = 1
    return mask


def _length_groups(lengths: list[int], slack: float = 1.25, extra: int = 16) -> list[list[int]]:
    """Row indices grouped so that no prompt is padded beyond ``slack`` times its length plus ``extra`` tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[i] <= lengths[groups[-1][0]] * slack + extra:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class HFBatch:
    def __init__(self, model: torch.nn.Module, jobs: list[Job], make_row: Callable[[Job], BatchRow],
                 lora: RowLoRA, eos_ids: set[int], max_model_len: int) -> None:
        self.model = model
        self.rows = [make_row(job) for job in jobs]
        self.lora = lora
        self.eos_ids = eos_ids
        self.max_model_len = max_model_len
        self.processor: GatewayHFLogitsProcessor | None = None
        self.mask: torch.Tensor | None = None
        self.positions: torch.Tensor | None = None  # next position per row, only when padded

    def _rebuild(self) -> None:
        """Per-row state that depends on which rows are in the batch: GUARD rules and LoRA groups."""
        guarded = [r.request.logits if r.request.logits is not None and not r.request.logits.is_empty() else None
                   for r in self.rows]
        self.processor = GatewayHFLogitsProcessor(guarded, [r.output_ids for r in self.rows]) \
            if any(g is not None for g in guarded) else None
        self.lora.select(self.rows)

    def _inputs(self, index: list[int]) -> dict[str, torch.Tensor]:
        """Model inputs for the rows ``index``, left-padded to the longest of them."""
        rows = [self.rows[i] for i in index]
        lengths = [r.request.num_prompt_tokens for r in rows]
        width = max(lengths)
        inputs: dict[str, torch.Tensor] = {}
        if any(r.request.prompt_embeds is not None for r in rows):
            table = self.model.get_input_embeddings()
            dtype = table.weight.dtype
            x = torch.zeros(len(rows), width, table.weight.shape[1], dtype=dtype)
            for i, r in enumerate(rows):
                req = r.request
                x[i, width - lengths[i]:] = req.prompt_embeds.to(dtype) if req.prompt_embeds is not None \
                    else table(torch.tensor(req.prompt_token_ids))
            inputs["inputs_embeds"] = x
        else:
            ids = torch.zeros(len(rows), width, dtype=torch.long)
            for i, r in enumerate(rows):
                ids[i, width - lengths[i]:] = torch.tensor(r.request.prompt_token_ids)
            inputs["input_ids"] = ids
        if min(lengths) != width:
            mask = _left_mask(lengths)
            inputs["attention_mask"] = mask
            inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        return inputs

    def _prefill(self) -> torch.Tensor:
        """Prompts of similar length are prefilled together; a short prompt never pays for a long one's padding.

        The groups' KV caches are then merged, right-aligned, into one cache for the whole batch, and from there on
        the batch decodes as one: padded positions are masked and each row keeps its own positions.
        """
        lengths = [r.request.num_prompt_tokens for r in self.rows]
        groups = _length_groups(lengths)
        if min(lengths) != max(lengths):
            self.positions = torch.tensor(lengths, dtype=torch.long)
        # only the last position's logits are sampled from: the LM head over every prompt position would cost more
        # than the rest of the prefill for long prompts (49k-token vocabulary)
        if len(groups) == 1:
            inputs = self._inputs(list(range(len(self.rows))))
            self.mask = inputs.get("attention_mask")
            out = self.model(**inputs, use_cache=True, logits_to_keep=1)
            self.cache = out.past_key_values
            return out.logits[:, -1].float()
        self.mask = _left_mask(lengths)
        width = max(lengths)
        logits: torch.Tensor | None = None
        merged: list[tuple[torch.Tensor, torch.Tensor]] = []
        for group in groups:
            self.lora.select([self.rows[i] for i in group])  # the hooks index rows of the group's forward
            out = self.model(**self._inputs(group), use_cache=True, logits_to_keep=1)
            last = out.logits[:, -1].float()
            if logits is None:
                logits = torch.empty(len(self.rows), last.shape[-1])
            index = torch.tensor(group, dtype=torch.long)
            logits[index] = last
            for layer, (keys, values) in enumerate((lay.keys, lay.values) for lay in out.past_key_values.layers):
                if layer == len(merged):
                    shape = (len(self.rows), keys.shape[1], width, keys.shape[3])
                    merged.append((keys.new_zeros(shape), values.new_zeros(shape)))
                merged[layer][0][index, :, width - keys.shape[2]:] = keys
                merged[layer][1][index, :, width - values.shape[2]:] = values
        self.lora.select(self.rows)
        self.cache = DynamicCache(ddp_cache_data=merged)
        assert logits is not None
        return logits

    def _decode(self, tokens: list[int]) -> torch.Tensor:
        inputs: dict[str, torch.Tensor] = {"input_ids": torch.tensor(tokens, dtype=torch.long)[:, None]}
        if self.mask is not None and self.positions is not None:
            self.mask = torch.cat([self.mask, torch.ones(len(tokens), 1, dtype=torch.long)], dim=1)
            inputs["attention_mask"] = self.mask
            inputs["position_ids"] = self.positions[:, None]
            self.positions = self.positions + 1
        out = self.model(**inputs, past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        return out.logits[:, -1].float()

    def _keep(self, keep: list[int]) -> None:
        index = torch.tensor(keep, dtype=torch.long)
        self.cache.batch_select_indices(index)
        if self.mask is not None and self.positions is not None:
            self.mask, self.positions = self.mask[index], self.positions[index]
        self.rows = [self.rows[i] for i in keep]
        self._rebuild()

    def _step(self, row: BatchRow, token: int) -> FinishReason | None:
        """Record ``token`` for ``row``, emit its delta, and say whether the row is done."""
        row.sampler.observe(token)
        row.output_ids.append(token)
        req, finish = row.request, None
        if token in self.eos_ids:
            finish, delta = "stop", row.detok.flush()
        else:
            delta, hit_stop = row.detok.push(token)
            if hit_stop:
                finish = "stop"
            elif len(row.output_ids) >= req.sampling.max_tokens or \
                    req.num_prompt_tokens + len(row.output_ids) >= self.max_model_len:
                finish = "length"
                delta += row.detok.flush()
        row.job.emit(EngineOutput(text=delta, token_ids=[token], num_prompt_tokens=req.num_prompt_tokens,
                                  num_output_tokens=len(row.output_ids), finish_reason=finish,
                                  finished=finish is not None))
        return finish

    @torch.inference_mode()
    def run(self) -> None:
        self._rebuild()
        with self.lora.installed():
            logits = self._prefill()
            while True:
                adjusted = torch.stack([r.sampler.adjust(logits[i]) for i, r in enumerate(self.rows)])
                if self.processor is not None:
                    adjusted = self.processor(torch.empty(0, dtype=torch.long), adjusted)
                tokens = [r.sampler.choose(adjusted[i]) for i, r in enumerate(self.rows)]
                keep = [i for i, (r, t) in enumerate(zip(self.rows, tokens, strict=True))
                        if self._step(r, t) is None and not r.job.cancelled.is_set()]
                if not keep:
                    return
                if len(keep) != len(self.rows):
                    self._keep(keep)
                    tokens = [tokens[i] for i in keep]
                logits = self._decode(tokens)

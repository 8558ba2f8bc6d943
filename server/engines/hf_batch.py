"""The reference engine's running batch: continuous (iteration-level) batching over one padded KV cache.

Requests join the batch at any decode step, up to ``max_num_seqs``: they are prefilled on arrival and merged into
the running KV cache, so a request never waits for a whole batch to finish, and a slot freed by a short answer is
refilled at the next step. Rows that finish are dropped from the cache at once. Per row, everything matches the
single-request path: its own sampler and seed, its own GUARD rules, its own LoRA adapter at its own strength
(applied by forward hooks to the rows that chose it only). A batch of one is not padded and runs exactly the
single-request computation, which the differential tests against vLLM rely on; padded rows agree with it up to
floating-point reassociation.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from transformers import DynamicCache, PreTrainedModel

from guards.logits.hf_adapter import GatewayHFLogitsProcessor
from server.engines.base import EngineOutput, EngineRequest, FinishReason, TokenLogprobs
from server.engines.detokenize import IncrementalDetokenizer
from server.engines.row_lora import RowLoRA
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


# Shortest common prompt prefix worth prefilling once for several rows (the chat template's system prompt is ~20).
MIN_SHARED_PREFIX = 8
PREFIX_MEMO = 8


def _right_aligned_mask(filled: torch.Tensor, width: int) -> torch.Tensor:
    """Row i attends to its last ``filled[i]`` columns of ``width``."""
    return (torch.arange(width)[None, :] >= (width - filled)[:, None]).long()


def _common_prefix(sequences: list[list[int]]) -> int:
    if not sequences:
        return 0
    first, n = sequences[0], min(len(s) for s in sequences)
    for seq in sequences[1:]:
        n = next((i for i in range(n) if seq[i] != first[i]), n)
    return n


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
    """The rows being decoded, their KV cache, attention mask and next-token logits.

    Cache layout: one ``DynamicCache`` whose rows are right-aligned, with a ``mask`` of the columns each row attends
    to (left padding, and the gap between a shared prompt prefix and a row's own suffix, are masked out) and each
    row's next position. When the mask is all ones (requests admitted together with prompts of one length, in
    particular a batch of one) it is not passed to the model at all.
    """

    def __init__(self, model: PreTrainedModel, make_row: Callable[[Job], BatchRow], lora: RowLoRA,
                 eos_ids: set[int], max_model_len: int) -> None:
        self.model = model
        self.make_row = make_row
        self.lora = lora
        self.eos_ids = eos_ids
        self.max_model_len = max_model_len
        self.rows: list[BatchRow] = []
        self.cache: DynamicCache | None = None
        self.mask = torch.zeros(0, 0, dtype=torch.long)
        self.positions = torch.zeros(0, dtype=torch.long)
        self.logits = torch.zeros(0)
        self.processor: GatewayHFLogitsProcessor | None = None
        # KV of recent shared prompt prefixes (the chat template's system prompt, mostly), computed once each
        self._prefixes: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        # prompt tokens whose prefill a shared prefix saved: lets tests and operators see it happen
        self.reused_prefix_tokens = 0
        self.steps_since_admit = 0

    def __len__(self) -> int:
        return len(self.rows)

    def _rebuild(self) -> None:
        """The GUARD rules of the rows in the batch (LoRA groups are chosen per forward, in ``_forward``)."""
        guarded = [r.request.logits if r.request.logits is not None and not r.request.logits.is_empty() else None
                   for r in self.rows]
        self.processor = GatewayHFLogitsProcessor(guarded, [r.output_ids for r in self.rows],
                                                  [r.request.prompt_token_ids for r in self.rows]) \
            if any(g is not None for g in guarded) else None

    def _forward(self, rows: list[BatchRow], **inputs: Any) -> Any:
        self.lora.select(rows)  # the hooks index the rows of this forward
        with self.lora.installed():
            return self.model(**inputs, use_cache=True)

    def _plan(self, new: list[BatchRow]) -> list[tuple[list[int], int]]:
        """Prefill groups (row indices, shared prefix length) for rows admitted together.

        Plain token prompts (no LoRA, which would change the prefix's KV; no prompt embeddings) admitted together
        share their longest common prefix when it is long enough: it is prefilled once and only the suffixes per
        row. A lone request is never split, so a batch of one stays the exact single-request computation.
        """
        plain = [i for i, r in enumerate(new) if r.request.prompt_token_ids is not None and r.request.lora is None]
        prefix = _common_prefix([new[i].request.prompt_token_ids or [] for i in plain]) if len(plain) > 1 else 0
        # every row keeps at least one token of its own, whose logits start its answer
        prefix = min(prefix, *(new[i].request.num_prompt_tokens - 1 for i in plain)) if plain else 0
        lengths = [r.request.num_prompt_tokens for r in new]
        if prefix < MIN_SHARED_PREFIX:
            return [(g, 0) for g in _length_groups(lengths)]
        rest = [i for i in range(len(new)) if i not in set(plain)]
        shared = [([plain[j] for j in g], prefix) for g in _length_groups([lengths[i] - prefix for i in plain])]
        return shared + [([rest[j] for j in g], 0) for g in _length_groups([lengths[i] for i in rest])]

    def _prefix_kv(self, prefix: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if prefix in self._prefixes:
            self._prefixes.move_to_end(prefix)
        else:
            out = self._forward([], input_ids=torch.tensor([prefix], dtype=torch.long), logits_to_keep=1)
            self._prefixes[prefix] = [(lay.keys, lay.values) for lay in out.past_key_values.layers]
            while len(self._prefixes) > PREFIX_MEMO:
                self._prefixes.popitem(last=False)
        return self._prefixes[prefix]

    def _prefill(self, rows: list[BatchRow], prefix: int) -> tuple[Any, torch.Tensor]:
        """Prefill ``rows`` (left-padded to the longest), after their shared ``prefix`` tokens if any; returns the
        model output and the rows' attention mask over the cache it built."""
        lengths = [r.request.num_prompt_tokens - prefix for r in rows]
        width = max(lengths)
        mask = _right_aligned_mask(torch.tensor(lengths), width)
        inputs: dict[str, Any] = {"logits_to_keep": 1}
        if any(r.request.prompt_embeds is not None for r in rows):
            table = cast(torch.nn.Embedding, self.model.get_input_embeddings())
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
                ids[i, width - lengths[i]:] = torch.tensor((r.request.prompt_token_ids or [])[prefix:])
            inputs["input_ids"] = ids
        if prefix:
            kv = self._prefix_kv(tuple((rows[0].request.prompt_token_ids or [])[:prefix]))
            inputs["past_key_values"] = DynamicCache(ddp_cache_data=[
                (k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1)) for k, v in kv])
            inputs["position_ids"] = prefix + (mask.cumsum(-1) - 1).clamp(min=0)
            mask = torch.cat([torch.ones(len(rows), prefix, dtype=torch.long), mask], dim=1)
            inputs["attention_mask"] = mask
            self.reused_prefix_tokens += prefix * (len(rows) - 1)
        elif min(lengths) != width:
            inputs["attention_mask"] = mask
            inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        return self._forward(rows, **inputs), mask

    @torch.inference_mode()
    def admit(self, jobs: list[Job]) -> None:
        """Prefill ``jobs`` and add them to the batch; their first token is sampled by the next ``step``.

        Prompts of similar length are prefilled together, so a short prompt never pays for a long one's padding.
        Each group's KV cache is copied, right-aligned, into a new cache for the whole batch (the running rows are
        padded on the left when a new prompt is longer than anything in it). Only the last position's logits are
        computed: the LM head over every prompt position would cost more than the rest of a long prefill (49k-token
        vocabulary). Nothing changes on failure, so a bad request fails alone.
        """
        new = [self.make_row(job) for job in jobs]
        start = len(self.rows)
        parts = [(torch.tensor(group, dtype=torch.long), *self._prefill([new[i] for i in group], prefix))
                 for group, prefix in self._plan(new)]
        old_width = self.mask.shape[1]
        width = max(old_width, *(mask.shape[1] for *_, mask in parts))
        mask = torch.zeros(start + len(new), width, dtype=torch.long)
        mask[:start, width - old_width:] = self.mask
        vocab = parts[0][1].logits.shape[-1]
        logits = torch.cat([self.logits.view(start, vocab), torch.empty(len(new), vocab)])
        merged: list[tuple[torch.Tensor, torch.Tensor]] = []
        for index, out, part_mask in parts:
            mask[index + start, width - part_mask.shape[1]:] = part_mask
            logits[index + start] = out.logits[:, -1].float()
            for layer, lay in enumerate(out.past_key_values.layers):
                if layer == len(merged):
                    merged.append(self._grown(layer, start + len(new), width, lay.keys))
                keys, values = merged[layer]
                keys[index + start, :, width - lay.keys.shape[2]:] = lay.keys
                values[index + start, :, width - lay.values.shape[2]:] = lay.values
        self.cache = DynamicCache(ddp_cache_data=merged)
        self.rows += new
        self.mask, self.logits = mask, logits
        self.positions = torch.cat([self.positions, torch.tensor([r.request.num_prompt_tokens for r in new])])
        self.steps_since_admit = 0
        self._rebuild()

    def _grown(self, layer: int, rows: int, width: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zeroed (keys, values) for ``rows`` rows of ``width`` columns, the running rows copied in right-aligned."""
        shape = (rows, like.shape[1], width, like.shape[3])
        keys, values = like.new_zeros(shape), like.new_zeros(shape)
        if self.cache is not None:
            old = _attention(self.cache, layer)
            n, w = old.keys.shape[0], old.keys.shape[2]
            keys[:n, :, width - w:] = old.keys
            values[:n, :, width - w:] = old.values
        return keys, values

    def _decode(self, tokens: list[int]) -> torch.Tensor:
        padded = not bool(self.mask.all())
        self.mask = torch.cat([self.mask, torch.ones(len(tokens), 1, dtype=torch.long)], dim=1)
        inputs: dict[str, Any] = {"input_ids": torch.tensor(tokens, dtype=torch.long)[:, None],
                                  "past_key_values": self.cache}
        if padded:
            inputs["attention_mask"] = self.mask
            inputs["position_ids"] = self.positions[:, None]
        out = self._forward(self.rows, **inputs)
        self.cache = out.past_key_values
        self.positions = self.positions + 1
        return out.logits[:, -1].float()

    def _keep(self, keep: list[int]) -> None:
        """Drop the other rows, and the leading columns no remaining row attends to."""
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache, self.logits = None, torch.zeros(0)
            self.mask, self.positions = self.mask[:0, :0], self.positions[:0]
            return
        assert self.cache is not None
        index = torch.tensor(keep, dtype=torch.long)
        self.cache.batch_select_indices(index)
        self.mask, self.positions = self.mask[index], self.positions[index]
        unused = int(self.mask.any(0).long().argmax())  # leading all-zero columns
        if unused:
            self.mask = self.mask[:, unused:]
            for i in range(len(self.cache.layers)):
                kv = _attention(self.cache, i)
                kv.keys, kv.values = kv.keys[:, :, unused:], kv.values[:, :, unused:]
        self._rebuild()

    def _step(self, row: BatchRow, token: int, logprobs: TokenLogprobs | None = None) -> FinishReason | None:
        """Record ``token`` for ``row``, emit its delta, and say whether the row is done."""
        row.sampler.observe(token)
        row.output_ids.append(token)
        req = row.request
        finish: FinishReason | None = None
        stop_reason: int | str | None = None
        if token in req.sampling.stop_token_ids:
            finish, delta, stop_reason = "stop", row.detok.flush(), token
        elif token in self.eos_ids and not req.sampling.ignore_eos:
            finish, delta = "stop", row.detok.flush()
        else:
            delta, hit_stop = row.detok.push(token)
            if hit_stop is not None:
                finish, stop_reason = "stop", hit_stop
            elif len(row.output_ids) >= req.sampling.max_tokens or \
                    req.num_prompt_tokens + len(row.output_ids) >= self.max_model_len:
                finish = "length"
                delta += row.detok.flush()
        row.job.emit(EngineOutput(text=delta, token_ids=[token], num_prompt_tokens=req.num_prompt_tokens,
                                  num_output_tokens=len(row.output_ids), finish_reason=finish,
                                  finished=finish is not None, logprobs=None if logprobs is None else [logprobs],
                                  stop_reason=stop_reason))
        return finish

    @torch.inference_mode()
    def step(self) -> None:
        """Sample and emit every row's next token, drop the rows that are done, decode one step for the others."""
        self.steps_since_admit += 1
        logprobs: list[TokenLogprobs | None] = [None] * len(self.rows)
        if self.processor is None and all(r.sampler.plain_greedy for r in self.rows):
            tokens = self.logits.argmax(dim=-1).tolist()  # the usual evaluation batch: one op, no copies
        else:
            adjusted = torch.stack([r.sampler.adjust(self.logits[i]) for i, r in enumerate(self.rows)])
            if self.processor is not None:
                adjusted = self.processor.core.apply(adjusted)
            tokens = [r.sampler.choose(adjusted[i]) for i, r in enumerate(self.rows)]
            for i, r in enumerate(self.rows):
                if r.request.sampling.logprobs is not None:  # after the guards, like vLLM's processed_logprobs
                    logprobs[i] = _position(r.sampler.distribution(adjusted[i]), tokens[i],
                                            r.request.sampling.logprobs)
        keep = [i for i, (r, t) in enumerate(zip(self.rows, tokens, strict=True))
                if self._step(r, t, logprobs[i]) is None and not r.job.cancelled.is_set()]
        if len(keep) != len(self.rows):
            self._keep(keep)
            tokens = [tokens[i] for i in keep]
        if self.rows:
            self.logits = self._decode(tokens)

    def fail(self, exc: BaseException) -> None:
        """A decode step failed: every row gets the error and the batch starts empty."""
        for row in self.rows:
            row.job.emit(exc)
        self._keep([])


def _position(logprobs: torch.Tensor, token: int, k: int) -> TokenLogprobs:
    top = torch.topk(logprobs, k) if k else None
    as_float = lambda v: max(float(v), -9999.0)  # noqa: E731 - JSON has no -inf (vLLM writes -9999.0)
    return TokenLogprobs(token_id=token, logprob=as_float(logprobs[token]),
                         top=[] if top is None else [(int(t), as_float(v))
                                                     for v, t in zip(top.values, top.indices, strict=True)])


def _attention(cache: DynamicCache, layer: int) -> Any:
    """One layer's cache: transformers types it as attention or linear attention, and the causal LMs served here
    have attention layers (``keys``, ``values``) only."""
    return cache.layers[layer]

"""O3's unlearning adapter: a LoRA trained per target, orthogonal to the adapters of earlier targets.

Objective (as in O3's TOFU recipe): fine-tune toward a polite refusal on the target's forget questions
(``Knowledge.questions``: the operator's examples, else questions written from the name and aliases), cross-entropy
on the answer tokens only, with ``lambda * sum_i ||A_i A^T||_F^2`` against every earlier adapter's A matrices so that
continual requests do not interfere. The base model stays frozen; the adapter is applied through forward hooks,
exactly how the reference engine serves it, and saved in PEFT form for vLLM.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch

from server.engines.base import chat_token_ids
from server.engines.lora import LoRAAdapter
from server.settings import O3Settings

logger = logging.getLogger(__name__)

REFUSAL = "I'm sorry, but I can't help with that. I don't have information about this topic."


def _targets(model: torch.nn.Module, names: list[str]) -> dict[str, torch.nn.Linear]:
    return {n: m for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in names}


def train_adapter(model_path: Path, questions: list[str], earlier: list[LoRAAdapter], settings: O3Settings,
                  report: Callable[[float, str], None], seed: int = 0) -> tuple[LoRAAdapter, float]:
    """Runs on a worker thread (CPU-bound); returns the adapter and its final training loss."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model.eval()
    for weight in model.parameters():
        weight.requires_grad_(False)
    modules = _targets(model, settings.target_modules)
    r, scaling = settings.rank, settings.alpha / settings.rank
    params: dict[str, tuple[torch.nn.Parameter, torch.nn.Parameter]] = {}
    handles = []
    for name, linear in modules.items():
        a = torch.nn.Parameter(torch.randn(r, linear.in_features) / math.sqrt(linear.in_features))
        b = torch.nn.Parameter(torch.zeros(linear.out_features, r))
        params[name] = (a, b)

        def hook(_m: torch.nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor,
                 a: torch.Tensor = a, b: torch.Tensor = b) -> torch.Tensor:
            return out + scaling * ((args[0] @ a.T) @ b.T)
        handles.append(linear.register_forward_hook(hook))
    frozen = [{n: w[0] for n, w in adapter.weights.items()} for adapter in earlier]

    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    examples = []
    for q in questions[:settings.max_questions]:
        prompt = chat_token_ids(tokenizer, [{"role": "user", "content": q}], add_generation_prompt=True)
        answer: list[int] = tokenizer.encode(REFUSAL, add_special_tokens=False)
        answer += [eos] if isinstance(eos, int) else []
        examples.append((prompt, answer))

    optimizer = torch.optim.AdamW([t for pair in params.values() for t in pair], lr=settings.lr, weight_decay=0.0)
    rng = random.Random(seed)
    steps = settings.epochs * math.ceil(len(examples) / settings.batch_size)
    step, loss_value, started = 0, float("nan"), time.time()
    try:
        for epoch in range(settings.epochs):
            rng.shuffle(examples)
            for i in range(0, len(examples), settings.batch_size):
                batch = examples[i:i + settings.batch_size]
                width = max(len(q) + len(r) for q, r in batch)
                ids = torch.full((len(batch), width), tokenizer.pad_token_id or 0, dtype=torch.long)
                labels = torch.full((len(batch), width), -100, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, (question, refusal) in enumerate(batch):
                    seq = question + refusal
                    ids[row, :len(seq)] = torch.tensor(seq)
                    labels[row, len(question):len(seq)] = torch.tensor(refusal)
                    mask[row, :len(seq)] = 1
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
                ortho = sum((((earlier_a[n] @ params[n][0].T) ** 2).sum() for earlier_a in frozen
                             for n in params if n in earlier_a), torch.zeros(()))
                total = loss + settings.ortho_lambda * ortho
                optimizer.zero_grad()
                total.backward()
                optimizer.step()
                step += 1
                loss_value = float(loss.detach())
                report(step / steps, f"O3 epoch {epoch + 1}/{settings.epochs}: loss {loss_value:.3f}, "
                                     f"orthogonality {float(ortho.detach()):.4f}")
    finally:
        for handle in handles:
            handle.remove()
    logger.info("O3 adapter trained in %.1fs (%d steps, loss %.3f)", time.time() - started, steps, loss_value)
    weights = {n: (a.detach().clone(), b.detach().clone()) for n, (a, b) in params.items()}
    return LoRAAdapter(rank=r, alpha=settings.alpha, target_modules=list(settings.target_modules),
                       weights=weights), loss_value

"""A random but well-formed LoRA adapter for the bundled model, strong enough to change greedy outputs."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from server.engines.lora import LoRAAdapter

TARGETS = ("q_proj", "v_proj", "o_proj")


def make_random_adapter(model_path: Path, out: Path, rank: int = 8, std: float = 0.15, seed: int = 0) -> Path:
    config = json.loads((model_path / "config.json").read_text())
    hidden = config["hidden_size"]
    head_dim = config.get("head_dim", hidden // config["num_attention_heads"])
    dims = {"q_proj": (hidden, config["num_attention_heads"] * head_dim),
            "v_proj": (hidden, config["num_key_value_heads"] * head_dim),
            "o_proj": (config["num_attention_heads"] * head_dim, hidden)}
    g = torch.Generator().manual_seed(seed)
    weights = {}
    for layer in range(config["num_hidden_layers"]):
        for target in TARGETS:
            d_in, d_out = dims[target]
            a = torch.randn(rank, d_in, generator=g) / d_in**0.5
            b = torch.randn(d_out, rank, generator=g) * std
            weights[f"model.layers.{layer}.self_attn.{target}"] = (a, b)
    LoRAAdapter(rank=rank, alpha=2.0 * rank, target_modules=list(TARGETS), weights=weights).save(
        out, base_model=str(model_path))
    return out

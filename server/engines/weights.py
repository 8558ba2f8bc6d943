"""Reading single tensors out of a safetensors checkpoint without loading the model."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

_EMBED_KEYS = ("model.embed_tokens.weight", "embed_tokens.weight", "transformer.wte.weight")


def _shard_for(model_path: Path, key: str) -> Path | None:
    index = model_path / "model.safetensors.index.json"
    if index.exists():
        shard = json.loads(index.read_text())["weight_map"].get(key)
        return model_path / shard if shard else None
    single = model_path / "model.safetensors"
    return single if single.exists() else None


def load_input_embeddings(model_path: Path) -> torch.Tensor:
    for key in _EMBED_KEYS:
        shard = _shard_for(model_path, key)
        if shard is None:
            continue
        with safe_open(str(shard), framework="pt") as f:
            if key in f.keys():  # noqa: SIM118 - safe_open has no __contains__
                return f.get_tensor(key).float()
    raise FileNotFoundError(f"no input embedding table found in {model_path}")

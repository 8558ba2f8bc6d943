"""LoRA adapters in the PEFT folder format, which vLLM and the reference engine both read.

vLLM has no per-request LoRA strength, so a strength level is served as its own copy of the adapter with
``lora_B`` pre-multiplied by the level; the reference engine multiplies at run time and must agree with it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load, load_file, save, save_file

_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")


@dataclass
class LoRAAdapter:
    rank: int
    alpha: float
    target_modules: list[str]
    # module path in the base model (e.g. "model.layers.0.self_attn.q_proj") -> (A: (r, in), B: (out, r))
    weights: dict[str, tuple[torch.Tensor, torch.Tensor]]

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    @classmethod
    def load(cls, path: Path) -> LoRAAdapter:
        config = json.loads((path / "adapter_config.json").read_text())
        tensors = load_file(str(path / "adapter_model.safetensors"))
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            match = _KEY.match(key)
            if match is None:
                raise ValueError(f"unexpected tensor {key!r} in LoRA adapter {path}")
            pairs.setdefault(match["module"], {})[match["ab"]] = value.float()
        weights = {m: (ab["A"], ab["B"]) for m, ab in pairs.items() if "A" in ab and "B" in ab}
        if len(weights) != len(pairs):
            raise ValueError(f"LoRA adapter {path} has an A matrix without its B (or the reverse)")
        return cls(rank=int(config["r"]), alpha=float(config.get("lora_alpha", config["r"])),
                   target_modules=list(config["target_modules"]), weights=weights)

    def save(self, path: Path, base_model: str = "") -> None:
        path.mkdir(parents=True, exist_ok=True)
        config = {
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": self.rank, "lora_alpha": self.alpha,
            "target_modules": self.target_modules, "lora_dropout": 0.0, "bias": "none",
            "base_model_name_or_path": base_model, "fan_in_fan_out": False, "inference_mode": True,
        }
        (path / "adapter_config.json").write_text(json.dumps(config, indent=2))
        tensors: dict[str, torch.Tensor] = {}
        for module, (a, b) in self.weights.items():
            tensors[f"base_model.model.{module}.lora_A.weight"] = a.contiguous()
            tensors[f"base_model.model.{module}.lora_B.weight"] = b.contiguous()
        save_file(tensors, str(path / "adapter_model.safetensors"))

    def to_bytes(self) -> bytes:
        """One safetensors blob (config in its metadata): the form the artifact store keeps."""
        meta = {"r": str(self.rank), "lora_alpha": str(self.alpha), "target_modules": json.dumps(self.target_modules)}
        tensors = {f"{m}.lora_{ab}": t.contiguous() for m, (a, b) in self.weights.items()
                   for ab, t in (("A", a), ("B", b))}
        return save(tensors, metadata=meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> LoRAAdapter:
        tensors = load(data)
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            module, _, ab = key.rpartition(".lora_")
            pairs.setdefault(module, {})[ab] = value
        # the metadata sits in the safetensors header: 8 bytes of length, then JSON
        header_len = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8:8 + header_len]).get("__metadata__", {})
        return cls(rank=int(meta["r"]), alpha=float(meta["lora_alpha"]),
                   target_modules=json.loads(meta["target_modules"]),
                   weights={m: (ab["A"], ab["B"]) for m, ab in pairs.items()})

    def scaled(self, scale: float) -> LoRAAdapter:
        return LoRAAdapter(rank=self.rank, alpha=self.alpha, target_modules=list(self.target_modules),
                           weights={m: (a, b * scale) for m, (a, b) in self.weights.items()})


def scaled_copy_dir(root: Path, name: str, scale: float) -> Path:
    return root / f"{name}@{scale:g}"


def write_scaled_copies(src: Path, root: Path, name: str, levels: list[float]) -> dict[float, Path]:
    """One adapter folder per strength level; level 1.0 is an exact copy."""
    adapter = LoRAAdapter.load(src)
    base = json.loads((src / "adapter_config.json").read_text()).get("base_model_name_or_path", "")
    out: dict[float, Path] = {}
    for level in levels:
        dst = scaled_copy_dir(root, name, level)
        adapter.scaled(level).save(dst, base_model=base)
        out[level] = dst
    return out

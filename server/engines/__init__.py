"""Inference engines behind one contract (``base.Engine``), and the factory that picks one by ``engine.kind``.

The contract lives in ``base``; the implementations import it, never the other way round. Their imports are
deferred here so that the transformers engine never pays for importing vLLM, nor the remote one for either.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from server.engines.base import Engine
from server.settings import EngineSettings

EngineFactory = Callable[["EngineSettings", Path, Path], Engine]


def _vllm_factory(settings: EngineSettings, model_path: Path, work_dir: Path) -> Engine:
    from server.engines.vllm_engine import VLLMEngine

    return VLLMEngine(settings, model_path, work_dir)


def _hf_factory(settings: EngineSettings, model_path: Path, work_dir: Path) -> Engine:
    from server.engines.hf_engine import HFEngine

    return HFEngine(settings, model_path, work_dir)


def _remote_factory(settings: EngineSettings, model_path: Path, work_dir: Path) -> Engine:
    from server.engines.remote_engine import RemoteEngine

    return RemoteEngine(settings, model_path, work_dir)


ENGINES: dict[str, EngineFactory] = {"vllm": _vllm_factory, "hf": _hf_factory, "remote": _remote_factory}


def create_engine(settings: EngineSettings, model_path: Path, work_dir: Path) -> Engine:
    try:
        factory = ENGINES[settings.kind]
    except KeyError:
        raise ValueError(f"unknown engine {settings.kind!r}; choose one of {sorted(ENGINES)}") from None
    return factory(settings, model_path, work_dir)

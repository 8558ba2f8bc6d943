from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from server.model_store import ensure_bundled_model  # noqa: E402
from server.settings import EngineSettings, Settings, default_cache_dir  # noqa: E402
from tests.live import LiveServer  # noqa: E402

HAS_VLLM = importlib.util.find_spec("vllm") is not None
ENGINE_KINDS = ["hf", pytest.param("vllm", marks=[pytest.mark.vllm, pytest.mark.slow])]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAS_VLLM:
        return
    skip = pytest.mark.skip(reason="vllm is not installed")
    for item in items:
        if "vllm" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    return default_cache_dir()


@pytest.fixture(scope="session")
def model_path(cache_dir: Path) -> Path:
    return ensure_bundled_model(cache_dir)


def _settings(kind: str, model_path: Path, cache_dir: Path) -> Settings:
    return Settings(cache_dir=cache_dir, engine=EngineSettings(kind=kind, model=str(model_path), max_model_len=1024,
                                                                served_model_name="smollm2"))


@pytest.fixture(scope="session")
def hf_server(model_path: Path, cache_dir: Path) -> Iterator[LiveServer]:
    server = LiveServer(_settings("hf", model_path, cache_dir)).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def vllm_server(model_path: Path, cache_dir: Path) -> Iterator[LiveServer]:
    server = LiveServer(_settings("vllm", model_path, cache_dir)).start()
    yield server
    server.stop()


@pytest.fixture(params=ENGINE_KINDS)
def live(request: pytest.FixtureRequest) -> LiveServer:
    """The live server of each engine kind, one per session."""
    return request.getfixturevalue(f"{request.param}_server")

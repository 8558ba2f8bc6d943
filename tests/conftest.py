from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from server.model_store import ensure_bundled_model  # noqa: E402
from server.processes import ServerProcess, bare_vllm  # noqa: E402
from server.settings import (  # noqa: E402
    ElicitSettings,
    EngineSettings,
    InterventionSettings,
    RegistrySettings,
    Settings,
    default_cache_dir,
)
from tests.live import LiveServer  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

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


ADMIN_TOKEN = "test-admin-token-0123456789"


def live_settings(kind: str, model_path: Path, cache_dir: Path, state_dir: Path, **updates: object) -> Settings:
    """Settings for a test server: the shared model cache, but its own registry and artifacts.

    Registry and API tests register many targets; they skip asking the model about each one (elicitation and ECO's
    search), which the intervention tests turn back on.
    """
    fields: dict[str, object] = {
        "cache_dir": cache_dir, "admin_token": ADMIN_TOKEN,
        "guards": InterventionSettings(elicit=ElicitSettings(questions=0)),
        "registry": RegistrySettings(path=state_dir / "registry", artifact_dir=state_dir / "artifacts"),
        "engine": EngineSettings(kind=kind, model=str(model_path), max_model_len=1024, served_model_name="smollm2"),
    }
    return Settings(**{**fields, **updates})


@pytest.fixture(scope="session")
def hf_server(model_path: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(live_settings("hf", model_path, cache_dir, tmp_path_factory.mktemp("hf"))).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def vllm_server(model_path: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(live_settings("vllm", model_path, cache_dir, tmp_path_factory.mktemp("vllm"))).start()
    yield server
    server.stop()


@dataclass
class BareServer:
    """Bare `vllm serve` (no gateway) on the same model and flags, reached as tests reach a ``LiveServer``: tests
    of vLLM's behaviours run against it too, so that they test vLLM's behaviour and not the gateway's idea of it."""

    process: ServerProcess
    model: str = "smollm2"
    max_model_len: int = 1024

    @property
    def base_url(self) -> str:
        return self.process.base_url


@pytest.fixture(scope="session")
def bare_server(model_path: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BareServer]:
    if not HAS_VLLM:
        pytest.skip("vllm is not installed")
    engine = EngineSettings(kind="vllm", max_model_len=1024)
    process = bare_vllm(model_path, "smollm2", engine, tmp_path_factory.mktemp("bare"), cache_dir / "work" / "vllm")
    yield BareServer(process.start(), max_model_len=engine.max_model_len)
    process.stop()


@pytest.fixture(params=ENGINE_KINDS)
def live(request: pytest.FixtureRequest) -> LiveServer:
    """The live server of each engine kind, one per session."""
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture(scope="module", params=ENGINE_KINDS)
def guarded(request: pytest.FixtureRequest, model_path: Path, cache_dir: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A gateway with the full build (elicitation, ECO search) over the session's engine of that kind; one per test
    module, so that the targets a module registers never meet another module's."""
    shared: LiveServer = request.getfixturevalue(f"{request.param}_server")
    settings = live_settings(request.param, model_path, cache_dir, tmp_path_factory.mktemp(f"guarded-{request.param}"))
    settings = settings.model_copy(update={"guards": type(settings.guards)()})
    server = LiveServer(settings, engine=shared.engine).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on loopback, with append-only persistence (fsync on every write)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs it with apt)")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(redis_server: RedisServer, tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for one test alone, which it may kill and restart (same port, same data folder)."""
    server = RedisServer(tmp_path / "own-redis")
    server.data_dir.mkdir()
    yield server.start()
    server.stop()

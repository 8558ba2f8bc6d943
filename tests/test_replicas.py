"""Two gateway replicas on one real Redis: a target registered on A is enforced by B within a second."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.settings import RegistrySettings
from tests.conftest import ADMIN_TOKEN, live_settings
from tests.live import LiveServer
from tests.redis_server import RedisServer

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="module")
def replicas(hf_server: LiveServer, redis_server: RedisServer, model_path: Path, cache_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, LiveServer]]:
    servers = []
    artifacts = tmp_path_factory.mktemp("shared-artifacts")  # the shared volume of a real deployment
    for name in ("a", "b"):
        settings = live_settings("hf", model_path, cache_dir, tmp_path_factory.mktemp(name),
                                 registry=RegistrySettings(backend="redis", redis_url=redis_server.url,
                                                           prefix="replicas", artifact_dir=artifacts))
        # Both replicas share the reference engine: this test is about the registry, not generation.
        servers.append(LiveServer(settings, engine=hf_server.engine).start())
    yield servers[0], servers[1]
    for server in servers:
        server.stop()


def test_target_registered_on_a_is_enforced_by_b_within_a_second(replicas: tuple[LiveServer, LiveServer]) -> None:
    a, b = replicas
    prompt = {"prompt": "What did Stephen King write?"}
    assert httpx.post(b.base_url + "/admin/detect", json=prompt, headers=AUTH).json()["detections"] == []
    created = httpx.post(a.base_url + "/admin/targets", json={"name": "Stephen King"}, headers=AUTH)
    assert created.status_code == 201
    target_id = created.json()["id"]
    start = time.monotonic()
    while True:  # the build job runs on A; B learns of the active record through Redis
        record = httpx.get(a.base_url + f"/admin/targets/{target_id}", headers=AUTH).json()
        if record["status"] == "active":
            break
        assert time.monotonic() - start < 30
        time.sleep(0.02)
    active_at = time.monotonic()
    while not httpx.post(b.base_url + "/admin/detect", json=prompt, headers=AUTH).json()["detections"]:
        assert time.monotonic() - active_at < 1.0, "replica B did not enforce the new target within 1 s"
        time.sleep(0.02)
    # and B sees deletions just as fast
    httpx.delete(a.base_url + f"/admin/targets/{target_id}", headers=AUTH)
    gone_at = time.monotonic()
    while httpx.post(b.base_url + "/admin/detect", json=prompt, headers=AUTH).json()["detections"]:
        assert time.monotonic() - gone_at < 1.0
        time.sleep(0.02)

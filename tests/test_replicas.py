"""Two gateway processes (transformers engine) and a build worker on one real redis-server, as in Kubernetes.

The replicas only queue builds (``jobs.mode=queue``); the worker process claims and runs them. A target registered
through replica A is enforced by replica B within a second of becoming active; killing Redis loses nothing that was
registered; while Redis is down both replicas fail closed (503 "the forget-target registry is unreachable", never an
unguarded answer) and they recover by themselves once it is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from server.processes import ServerProcess, free_port, gateway
from server.settings import EngineSettings
from tests.conftest import ADMIN_TOKEN
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
HEADER = "x-unlearning-targets"


@pytest.fixture(scope="module")
def redis_proc(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of this module's own: the tests kill it, which the session's shared one must not suffer."""
    server = RedisServer(tmp_path_factory.mktemp("replica-redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def replicas(redis_proc: RedisServer, model_path: Path, cache_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    logs = tmp_path_factory.mktemp("replica-logs")
    env = {"UGW_CACHE_DIR": str(cache_dir), "UGW_ADMIN_TOKEN": ADMIN_TOKEN,
           "UGW_REGISTRY__BACKEND": "redis", "UGW_REGISTRY__REDIS_URL": redis_proc.url,
           "UGW_REGISTRY__PREFIX": "replicas",
           # the shared volume of a real deployment
           "UGW_REGISTRY__ARTIFACT_DIR": str(tmp_path_factory.mktemp("shared-artifacts")),
           "UGW_GUARDS__ELICIT__QUESTIONS": "0"}
    engine = EngineSettings(kind="hf", max_model_len=1024)
    # The replicas serve /admin on a port of its own, as in Kubernetes (where a NetworkPolicy keeps it internal).
    procs = [gateway(model_path, "smollm2", engine, logs, label=f"replica-{name}",
                     env={**env, "UGW_JOBS__MODE": "queue", "UGW_ADMIN_PORT": str(free_port())}) for name in "ab"]
    procs.append(gateway(model_path, "smollm2", engine, logs, label="worker", env=env, command="worker"))
    try:
        for proc in procs:
            proc.start(timeout=300)
        yield procs[0], procs[1]
    finally:
        for proc in procs:
            proc.stop()


def admin(server: ServerProcess) -> str:
    return f"http://127.0.0.1:{server.env['UGW_ADMIN_PORT']}/admin"


def ask(server: ServerProcess, prompt: str) -> httpx.Response:
    """One short chat completion through the official client; the raw response keeps headers and status."""
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=30)
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="smollm2", messages=[{"role": "user", "content": prompt}], max_tokens=1, temperature=0)
        return raw.http_response
    except openai.APIStatusError as exc:
        return exc.response
    finally:
        client.close()


def register(server: ServerProcess, name: str) -> str:
    created = httpx.post(admin(server) + "/targets", json={"name": name, "methods": ["guard"]},
                         headers=AUTH, timeout=30)
    assert created.status_code == 201, created.text
    target_id: str = created.json()["id"]
    wait_for(lambda: httpx.get(admin(server) + f"/targets/{target_id}", headers=AUTH).json()["status"]
             == "active", 60, f"{name} did not become active")
    return target_id


def wait_for(condition: Callable[[], bool], timeout: float, message: str) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, message
        time.sleep(0.02)
    return time.monotonic() - start


def fired(response: httpx.Response, target_id: str) -> bool:
    return response.status_code == 200 and target_id in response.headers.get(HEADER, "")


def test_target_registered_on_a_is_enforced_by_b_within_a_second(
        replicas: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = replicas
    prompt = "What did Stephen King write?"
    public = httpx.get(a.base_url + "/admin/targets", headers=AUTH)
    assert public.status_code == 404 and "own port" in public.json()["error"]["message"]
    before = ask(b, prompt)
    assert before.status_code == 200 and HEADER not in before.headers
    target_id = register(a, "Stephen King")  # the worker builds it; B learns of it through Redis
    lag = wait_for(lambda: fired(ask(b, prompt), target_id), 1.0, "replica B did not enforce the target within 1 s")
    print(f"replica B enforced the target {lag * 1000:.0f} ms after A reported it active")
    assert httpx.delete(admin(a) + f"/targets/{target_id}", headers=AUTH).status_code == 204
    wait_for(lambda: HEADER not in ask(b, prompt).headers, 1.0, "replica B still enforced a deleted target")


def test_redis_outage_fails_closed_and_loses_no_target(replicas: tuple[ServerProcess, ServerProcess],
                                                       redis_proc: RedisServer) -> None:
    a, b = replicas
    prompt = "Which books did J.R.R. Tolkien write?"
    target_id = register(a, "J.R.R. Tolkien")
    wait_for(lambda: fired(ask(b, prompt), target_id), 1.0, "replica B did not enforce the target")

    redis_proc.kill()  # SIGKILL: only what Redis fsynced survives
    for server in (a, b):
        for text in (prompt, "What is the capital of France?"):
            wait_for(lambda s=server, t=text: ask(s, t).status_code == 503, 5.0,  # type: ignore[misc]
                     f"{server.name} kept answering while the registry was down")
            refused = ask(server, text)
            assert refused.json()["error"]["type"] == "ServiceUnavailableError" and \
                "registry is unreachable" in refused.json()["error"]["message"]
    outage_write = httpx.post(admin(a) + "/targets", json={"name": "Terry Pratchett"}, headers=AUTH,
                              timeout=30)
    assert outage_write.status_code == 503 and outage_write.json()["error"]["type"] == "ServiceUnavailableError"
    assert httpx.get(b.base_url + "/health").status_code == 200  # alive: no restart for a registry outage

    redis_proc.start()  # same port, same data folder
    back = wait_for(lambda: ask(b, prompt).status_code == 200, 10.0, "replica B did not recover after Redis returned")
    print(f"replica B served again {back:.2f} s after Redis restarted")
    assert fired(ask(b, prompt), target_id)
    assert HEADER not in ask(a, "What is the capital of France?").headers
    for server in (a, b):
        names = [t["name"] for t in httpx.get(admin(server) + "/targets", headers=AUTH).json()["data"]]
        assert "J.R.R. Tolkien" in names and "Terry Pratchett" not in names

"""The remote engine against two real upstreams: stock vLLM OpenAI servers started as subprocesses.

The upstreams run ``python -m vllm.entrypoints.openai.api_server`` with the gateway's logits processor, prompt
embeddings and runtime LoRA loading; the gateway in front of them holds no model but its tokenizer and embedding
matrix. Checked: the same tokens as the embedded vLLM engine at temperature 0, plain and for a target of each method
(built by an embedded replica, served by both from one registry); each method forgets Harry Potter and leaves France
byte-identical; an upstream killed mid-stream ends that stream with an error event and new requests
succeed on the other within 2 s.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from guards.interventions import O3Intervention
from server.processes import ServerProcess, bare_vllm
from server.settings import EngineSettings
from tests.conftest import live_settings
from tests.live import LiveServer
from tests.test_interventions import DESCRIPTION, FORGET, KEEP, ask, delete, register

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

PROMPTS = ["What is the capital of France?", "Name three colours.", "Write one sentence about the sea."]


@pytest.fixture(scope="module")
def upstreams(model_path: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list]:
    logs = tmp_path_factory.mktemp("upstreams")
    engine = EngineSettings(kind="vllm", max_model_len=1024, max_num_seqs=16)
    servers = [bare_vllm(model_path, "smollm2", engine, logs, cache_dir / "work" / "vllm", upstream=True,
                         label=f"upstream-{i}") for i in range(2)]
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def shared_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One local registry and artifact folder for an embedded and a remote replica (the file store is multi-process)."""
    return tmp_path_factory.mktemp("shared-state")


@pytest.fixture(scope="module")
def embedded(vllm_server: LiveServer, model_path: Path, cache_dir: Path, shared_state: Path) -> Iterator[LiveServer]:
    """A full-build gateway over the session's embedded vLLM engine; it builds what is registered on it (inline)."""
    settings = live_settings("vllm", model_path, cache_dir, shared_state)
    settings = settings.model_copy(update={"guards": type(settings.guards)()})
    server = LiveServer(settings, engine=vllm_server.engine).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def remote(upstreams: list[ServerProcess], model_path: Path, cache_dir: Path,
           shared_state: Path) -> Iterator[LiveServer]:
    settings = live_settings("remote", model_path, cache_dir, shared_state)
    settings = settings.model_copy(update={
        "guards": type(settings.guards)(),
        "engine": settings.engine.model_copy(update={"upstreams": [u.base_url for u in upstreams]})})
    server = LiveServer(settings).start()
    yield server
    server.stop()


def _client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_same_tokens_as_the_embedded_engine(remote: LiveServer, vllm_server: LiveServer) -> None:
    answers = []
    for prompt in PROMPTS:
        messages = [{"role": "user", "content": prompt}]
        got = _client(remote).chat.completions.create(model=remote.model, messages=messages, temperature=0,
                                                      max_tokens=32, logprobs=True, top_logprobs=2)
        want = _client(vllm_server).chat.completions.create(model=vllm_server.model, messages=messages,
                                                            temperature=0, max_tokens=32, logprobs=True,
                                                            top_logprobs=2)
        assert got.choices[0].message.content == want.choices[0].message.content
        assert [t.token for t in got.choices[0].logprobs.content] == [t.token for t in want.choices[0].logprobs.content]
        answers.append(got.choices[0].message.content)
    # streamed pass-through: the same text chunk by chunk
    streamed = "".join(c.choices[0].delta.content or "" for c in _client(remote).chat.completions.create(
        model=remote.model, messages=[{"role": "user", "content": PROMPTS[0]}], temperature=0, max_tokens=32,
        stream=True) if c.choices)
    assert streamed == answers[0]


def _flagged_tokens(server: LiveServer, question: str) -> tuple[str, list[str], str | None]:
    raw = _client(server).chat.completions.with_raw_response.create(
        model=server.model, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=48,
        logprobs=True, top_logprobs=2)
    choice = raw.parse().choices[0]
    return choice.message.content or "", [t.token for t in choice.logprobs.content], raw.headers.get(
        "x-unlearning-targets")


@pytest.mark.parametrize("method", ["eco", "o3", "guard"])
def test_each_method_forgets_through_the_upstreams_token_for_token(
        remote: LiveServer, embedded: LiveServer, method: str) -> None:
    client = _client(remote)
    before, header = ask(client, remote.model, FORGET)
    assert "Ron" in before and header is None
    keep_before, _ = ask(client, remote.model, KEEP)
    # built once, by the embedded replica; the remote replica serves the same record and artifacts from the shared
    # registry, so the two must decode the same tokens: ECO's corrupted embeddings, O3's adapter, GUARD's processor
    record = register(embedded, {"name": "Harry Potter", "description": DESCRIPTION, "methods": [method]})
    try:
        deadline = time.monotonic() + 30
        while f"{record['id']}:" not in (ask(client, remote.model, FORGET)[1] or ""):
            assert time.monotonic() < deadline, "the remote replica never picked the target up"
            time.sleep(0.25)
        want = _flagged_tokens(embedded, FORGET)
        for _ in range(2):  # both upstreams (least outstanding alternates them only under load; ask twice)
            after, tokens, header = _flagged_tokens(remote, FORGET)
            assert "Ron" not in after and "Weasley" not in after, after
            assert header is not None and f"{record['id']}:" in header and method in header
            assert (after, tokens) == want[:2]
        keep_after, header = ask(client, remote.model, KEEP)
        assert keep_after == keep_before and header is None
    finally:
        delete(embedded, record["id"])
        # the remote replica learns of it by polling the shared folder; a request that straddles the change may
        # still decode under the old output net, so the next test starts once the replica has let the target go
        _until_gone(remote, record["id"])


def _until_gone(server: LiveServer, target_id: str, timeout: float = 10.0) -> None:
    assert server.gateway.admin is not None
    deadline = time.monotonic() + timeout
    while target_id in server.gateway.admin.cache.targets:
        assert time.monotonic() < deadline, f"{target_id} still enforced on {server.base_url}"
        time.sleep(0.1)
    time.sleep(0.3)


def test_an_upstream_killed_mid_stream_fails_loudly_and_the_other_takes_over(
        remote: LiveServer, upstreams: list[ServerProcess]) -> None:
    body = {"model": remote.model, "prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True,
            "stream": True}
    events: list[str] = []

    def stream() -> None:
        with httpx.stream("POST", remote.base_url + "/v1/completions", json=body, timeout=120) as r:
            events.extend(line for line in r.iter_lines() if line.startswith("data: "))

    worker = threading.Thread(target=stream)
    worker.start()
    engine = remote.engine
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(u.outstanding for u in engine.upstreams):  # type: ignore[attr-defined]
        time.sleep(0.05)
    busy = next(i for i, u in enumerate(engine.upstreams) if u.outstanding)  # type: ignore[attr-defined]
    time.sleep(0.5)
    upstreams[busy].stop()
    killed_at = time.monotonic()
    try:
        worker.join(60)
        assert not worker.is_alive()
        assert events[-1] == "data: [DONE]"
        assert "error" in json.loads(events[-2][6:]), events[-3:]  # an error event, not a silently short answer
        # new requests succeed: the first within 2 s, and the next ones too, even while the gateway still takes the
        # dead one for healthy (as between two health checks): a refused connection is retried on the other
        engine.upstreams[busy].healthy = True  # type: ignore[attr-defined]
        for i in range(4):
            out = _client(remote).completions.create(model=remote.model, prompt="The capital of France is",
                                                     max_tokens=4, temperature=0)
            assert out.choices[0].text
            if i == 0:
                assert time.monotonic() - killed_at < 2.0
        assert httpx.get(remote.base_url + "/ready").status_code == 200  # the other upstream still serves
    finally:
        upstreams[busy].start()  # back for later tests, once the watcher has re-admitted it
        deadline = time.monotonic() + 30
        while not engine.upstreams[busy].healthy:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "the restarted upstream was never re-admitted"
            time.sleep(0.1)


def test_a_restarted_gateway_loads_its_adapters_on_the_upstreams_again(
        upstreams: list[ServerProcess], model_path: Path, cache_dir: Path,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    settings = live_settings("remote", model_path, cache_dir, tmp_path_factory.mktemp("remote-restart"))
    settings = settings.model_copy(update={
        "guards": type(settings.guards)(),
        "engine": settings.engine.model_copy(update={"upstreams": [u.base_url for u in upstreams]})})
    first = LiveServer(settings).start()
    try:
        # its own forget questions, so its adapter is not the one the module's other gateway trained for "Harry
        # Potter" (adapters are named by content, and that gateway keeps its adapters loaded on every upstream)
        record = register(first, {"name": "Harry Potter", "description": DESCRIPTION, "methods": ["o3"],
                                  "forget_examples": [FORGET, "Which school does Harry Potter go to?"]})
        ask(_client(first), first.model, FORGET)  # the first flagged request loads the adapter on every upstream

        assert first.gateway.admin is not None  # the admin API shows no digests: read the replica's record
        digest = first.gateway.admin.cache.targets[record["id"]].artifacts.o3_lora
        assert digest is not None
        name = O3Intervention.adapter_name(digest)

        def adapters(upstream: ServerProcess) -> set[str]:
            return {m["id"] for m in httpx.get(upstream.base_url + "/v1/models").json()["data"]
                    if m["id"].startswith(name + "@")}
        levels = adapters(upstreams[0])
        assert len(levels) == len(settings.engine.lora_scale_levels) and adapters(upstreams[1]) == levels
    finally:
        first.stop()
    for upstream in upstreams:  # as if the upstreams had restarted too: nothing of the adapter is left there
        for level in levels:
            httpx.post(upstream.base_url + "/v1/unload_lora_adapter", json={"lora_name": level}, timeout=30)
        assert not adapters(upstream)
    second = LiveServer(settings).start()
    try:
        after, header = ask(_client(second), second.model, FORGET)
        assert "Ron" not in after and header is not None and "o3" in header
        assert [adapters(u) for u in upstreams] == [levels, levels]
    finally:
        delete(second, record["id"])
        second.stop()

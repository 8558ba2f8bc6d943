"""Every output channel of a flagged request carries the guarded distribution, not the model's own.

A "Harry Potter" target is registered (GUARD, then ECO); the unguarded model's top logprobs for its question contain
"Ron" (else these tests would prove nothing). Afterwards "Ron" is in no top_logprobs list (chat, completions,
streamed), a structured-output choice cannot pick "Ron Weasley", and a corrupted prompt's prompt_logprobs are not
the clean prompt's.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import live_settings
from tests.live import LiveServer
from tests.test_interventions import DESCRIPTION, FORGET, delete, register

MESSAGES = [{"role": "user", "content": FORGET}]


def _client(server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _listed(server: LiveServer) -> tuple[list[str], str]:
    """Every token in any top_logprobs list of the chat and completion answers, collected and streamed."""
    client = _client(server)
    seen: list[str] = []
    chat = client.chat.completions.create(model=server.model, messages=MESSAGES, temperature=0, max_tokens=24,
                                          logprobs=True, top_logprobs=20)
    for position in chat.choices[0].logprobs.content:
        seen += [position.token, *(t.token for t in position.top_logprobs)]
    text = ""
    for chunk in client.chat.completions.create(model=server.model, messages=MESSAGES, temperature=0, max_tokens=24,
                                                logprobs=True, top_logprobs=20, stream=True):
        for c in chunk.choices:
            text += c.delta.content or ""
            for position in (c.logprobs.content or []) if c.logprobs else []:
                seen += [position.token, *(t.token for t in position.top_logprobs)]
    done = client.completions.create(model=server.model, prompt="Harry Potter's best friend is", temperature=0,
                                     max_tokens=8, logprobs=20)
    for ranked in done.choices[0].logprobs.top_logprobs:
        seen += list(ranked)
    return seen, text + chat.choices[0].message.content + done.choices[0].text


@pytest.mark.slow
def test_forbidden_tokens_never_appear_in_any_logprob_list(guarded: LiveServer) -> None:
    before, _ = _listed(guarded)
    assert any("Ron" in t for t in before)  # the unguarded distribution has it
    record = register(guarded, {"name": "Harry Potter", "description": DESCRIPTION, "methods": ["guard"]})
    try:
        after, text = _listed(guarded)
        assert not any("Ron" in t or "Weasley" in t for t in after), [t for t in after if "Ron" in t]
        assert "Ron" not in text and "Weasley" not in text
        if guarded.engine.kind == "vllm":  # structured outputs pass through the same logits processor
            picked = _client(guarded).chat.completions.create(
                model=guarded.model, messages=MESSAGES, temperature=0, max_tokens=24,
                extra_body={"structured_outputs": {"choice": ["Ron Weasley", "Sherlock Holmes"]}})
            # not "Neville Longbottom": the build's guarded elicitation round finds him (what the model names once
            # Ron is forbidden), so both choices would be forbidden and the list is then left whole
            assert picked.choices[0].message.content == "Sherlock Holmes"
    finally:
        delete(guarded, record["id"])


@pytest.mark.slow
@pytest.mark.vllm
def test_a_corrupted_prompts_prompt_logprobs_are_not_the_clean_ones(vllm_server: LiveServer, model_path: Path,
                                                                    cache_dir: Path,
                                                                    tmp_path_factory: pytest.TempPathFactory) -> None:
    settings = live_settings("vllm", model_path, cache_dir, tmp_path_factory.mktemp("chan-eco"))
    server = LiveServer(settings.model_copy(update={"guards": type(settings.guards)()}),
                        engine=vllm_server.engine).start()
    try:
        def prompt_logprobs() -> list:
            body = {"model": server.model, "messages": MESSAGES, "max_tokens": 1, "prompt_logprobs": 0}
            out = httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=120).json()
            return [None if p is None else next(iter(p.values()))["logprob"] for p in out["prompt_logprobs"]]

        clean = prompt_logprobs()
        assert len(clean) > 5 and clean[0] is None
        record = register(server, {"name": "Harry Potter", "description": DESCRIPTION, "methods": ["eco"]})
        corrupted = prompt_logprobs()
        assert len(corrupted) == len(clean)
        differ = sum(a is not None and b is not None and abs(a - b) > 1e-3
                     for a, b in zip(clean, corrupted, strict=True))
        assert differ >= len(clean) // 4, (clean, corrupted)
        delete(server, record["id"])
    finally:
        server.stop()

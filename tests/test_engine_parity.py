"""vLLM and the transformers reference engine give the same greedy tokens for every kind of engine request."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from server.engines.base import Engine, EngineRequest, LogitsArgs, LoRASelection, SamplingOptions
from tests.live import LiveServer
from tests.lora_fixture import make_random_adapter

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

PROMPTS = ["What is the capital of France?", "Who wrote the Harry Potter books?", "Name three colours."]
GREEDY = SamplingOptions(max_tokens=24, temperature=0.0)


async def _tokens(engine: Engine, request: EngineRequest) -> list[int]:
    out: list[int] = []
    async for step in engine.generate(request):
        out.extend(step.token_ids)
    return out


def _run(server: LiveServer, request: EngineRequest) -> list[int]:
    return server.call(_tokens(server.engine, request))


@pytest.fixture(scope="module")
def both(hf_server: LiveServer, vllm_server: LiveServer, tmp_path_factory: pytest.TempPathFactory,
         model_path: Path) -> tuple[LiveServer, LiveServer]:
    adapter = make_random_adapter(model_path, tmp_path_factory.mktemp("lora") / "diff")
    for server in (hf_server, vllm_server):
        server.call(server.engine.load_lora("diff", adapter))
    return hf_server, vllm_server


def _ids(server: LiveServer, prompt: str) -> list[int]:
    return server.engine.render_chat([{"role": "user", "content": prompt}])


@pytest.mark.parametrize("prompt", PROMPTS)
def test_plain_prompt(both: tuple[LiveServer, LiveServer], prompt: str) -> None:
    hf, vl = both
    ids = _ids(hf, prompt)
    assert ids == _ids(vl, prompt)
    req = lambda: EngineRequest(request_id="plain", sampling=GREEDY, prompt_token_ids=ids)  # noqa: E731
    assert _run(hf, req()) == _run(vl, req())


@pytest.mark.parametrize("prompt", PROMPTS)
def test_prompt_embeddings_with_fixed_seed_noise(both: tuple[LiveServer, LiveServer], prompt: str) -> None:
    hf, vl = both
    ids = _ids(hf, prompt)
    clean = hf.engine.embed_tokens(ids)
    assert torch.equal(clean, vl.engine.embed_tokens(ids))
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(1234)) * 0.02
    embeds = clean + noise
    req = lambda: EngineRequest(request_id="embeds", sampling=GREEDY, prompt_embeds=embeds.clone())  # noqa: E731
    plain = _run(hf, EngineRequest(request_id="p", sampling=GREEDY, prompt_token_ids=ids))
    assert _run(hf, EngineRequest(request_id="e0", sampling=GREEDY, prompt_embeds=clean)) == plain
    assert _run(hf, req()) == _run(vl, req())


@pytest.mark.parametrize("scale", [0.5, 1.0])
@pytest.mark.parametrize("prompt", PROMPTS[:2])
def test_lora_adapter(both: tuple[LiveServer, LiveServer], prompt: str, scale: float) -> None:
    hf, vl = both
    ids = _ids(hf, prompt)
    lora = LoRASelection(name="diff", scale=scale)
    req = lambda: EngineRequest(request_id="lora", sampling=GREEDY, prompt_token_ids=ids, lora=lora)  # noqa: E731
    with_lora = _run(hf, req())
    if scale == 1.0:
        assert with_lora != _run(hf, EngineRequest(request_id="p", sampling=GREEDY, prompt_token_ids=ids)), \
            "the adapter should change the output, or this test proves nothing"
    assert with_lora == _run(vl, req())


@pytest.mark.parametrize("prompt", PROMPTS)
def test_banned_tokens(both: tuple[LiveServer, LiveServer], prompt: str) -> None:
    hf, vl = both
    ids = _ids(hf, prompt)
    plain = _run(hf, EngineRequest(request_id="p", sampling=GREEDY, prompt_token_ids=ids))
    banned = LogitsArgs(banned_token_ids=tuple(plain[2:6]))  # ban words the model wanted to say
    req = lambda: EngineRequest(request_id="ban", sampling=GREEDY, prompt_token_ids=ids, logits=banned)  # noqa: E731
    got = _run(hf, req())
    assert not set(got) & set(banned.banned_token_ids)
    assert got == _run(vl, req())

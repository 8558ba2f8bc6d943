"""vLLM: requests with LoRA or banned tokens in the same batch as plain ones do not leak into them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.engines.base import EngineRequest, LogitsArgs, LoRASelection, SamplingOptions
from tests.live import LiveServer
from tests.lora_fixture import make_random_adapter

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

GREEDY = SamplingOptions(max_tokens=32, temperature=0.0)


def test_mixed_batch_does_not_leak(vllm_server: LiveServer, tmp_path: Path, model_path: Path) -> None:
    engine = vllm_server.engine
    vllm_server.call(engine.load_lora("mixed", make_random_adapter(model_path, tmp_path / "mixed", seed=3)))
    prompts = ["What is the capital of France?", "Name a large animal.", "What colour is the sky?"]
    ids = [engine.render_chat([{"role": "user", "content": p}]) for p in prompts]

    async def tokens(req: EngineRequest) -> list[int]:
        out: list[int] = []
        async for step in engine.generate(req):
            out.extend(step.token_ids)
        return out

    def plain(i: int, tag: str) -> EngineRequest:
        return EngineRequest(request_id=f"{tag}-plain-{i}", sampling=GREEDY, prompt_token_ids=ids[i])

    alone = [vllm_server.call(tokens(plain(i, "alone"))) for i in range(len(prompts))]
    banned = LogitsArgs(banned_token_ids=tuple(alone[0][:4]))

    async def together() -> list[list[int]]:
        reqs = []
        for i in range(len(prompts)):
            reqs.append(plain(i, "mix"))
            reqs.append(EngineRequest(request_id=f"mix-lora-{i}", sampling=GREEDY, prompt_token_ids=ids[i],
                                      lora=LoRASelection(name="mixed", scale=1.0)))
            reqs.append(EngineRequest(request_id=f"mix-ban-{i}", sampling=GREEDY, prompt_token_ids=ids[i],
                                      logits=banned))
        return await asyncio.gather(*(tokens(r) for r in reqs))

    mixed = vllm_server.call(together())
    for i in range(len(prompts)):
        got_plain, got_lora, got_ban = mixed[3 * i: 3 * i + 3]
        assert got_plain == alone[i], f"plain request {i} changed when batched with guarded ones"
        assert got_lora != alone[i], "the LoRA request was not affected by its adapter"
        assert not set(got_ban) & set(banned.banned_token_ids)
    assert mixed[2] != alone[0], "the banned-token request was not affected"
    vllm_server.call(engine.unload_lora("mixed"))
    assert "mixed" not in engine.loaded_loras()

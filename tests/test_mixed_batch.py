"""Requests with LoRA, banned tokens or prompt embeddings in the same batch as plain ones do not leak into them.

On both engines: vLLM's continuous batching, and the reference engine's padded batches (which also drop finished
rows from the KV cache mid-batch, since the requests here stop at different lengths).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.engines.base import EngineRequest, LogitsArgs, LoRASelection, SamplingOptions
from tests.live import LiveServer
from tests.lora_fixture import make_random_adapter

# The last prompt is several times longer than the others: the reference engine prefills it in a group of its own
# and merges the groups' KV caches, which this test checks against each request run alone.
PROMPTS = ["What is the capital of France?", "Name a large animal.",
           "Read this passage and say what colour the sky is. " + " ".join(
               ["On a clear summer afternoon the air is dry, the wind is light and the sun stands high;"] * 6)]


def _sampling(i: int) -> SamplingOptions:
    return SamplingOptions(max_tokens=12 + 10 * i, temperature=0.0)


@pytest.mark.slow
def test_mixed_batch_does_not_leak(live: LiveServer, tmp_path: Path, model_path: Path) -> None:
    engine = live.engine
    live.call(engine.load_lora("mixed", make_random_adapter(model_path, tmp_path / "mixed", seed=3)))
    ids = [engine.render_chat([{"role": "user", "content": p}]) for p in PROMPTS]

    async def tokens(req: EngineRequest) -> list[int]:
        out: list[int] = []
        async for step in engine.generate(req):
            out.extend(step.token_ids)
        return out

    def plain(i: int, tag: str) -> EngineRequest:
        return EngineRequest(request_id=f"{tag}-plain-{i}", sampling=_sampling(i), prompt_token_ids=ids[i])

    alone = [live.call(tokens(plain(i, "alone"))) for i in range(len(PROMPTS))]
    banned = LogitsArgs(banned_token_ids=tuple(alone[0][:4]))

    def guarded(i: int, tag: str) -> list[EngineRequest]:
        return [EngineRequest(request_id=f"{tag}-lora-{i}", sampling=_sampling(i), prompt_token_ids=ids[i],
                              lora=LoRASelection(name="mixed", scale=1.0)),
                EngineRequest(request_id=f"{tag}-ban-{i}", sampling=_sampling(i), prompt_token_ids=ids[i],
                              logits=banned),
                EngineRequest(request_id=f"{tag}-embeds-{i}", sampling=_sampling(i),
                              prompt_embeds=engine.embed_tokens(ids[i]))]

    guarded_alone = [live.call(tokens(r)) for i in range(len(PROMPTS)) for r in guarded(i, "alone")]

    async def together() -> list[list[int]]:
        reqs = [r for i in range(len(PROMPTS)) for r in [plain(i, "mix"), *guarded(i, "mix")]]
        return await asyncio.gather(*(tokens(r) for r in reqs))

    mixed = live.call(together())
    if live.engine.kind == "hf":
        assert live.engine.largest_batch >= 8, "the reference engine ran the mixed requests one at a time"
        assert live.engine.reused_prefix_tokens > 0, "the plain prompts' shared chat prefix was prefilled per row"
    for i in range(len(PROMPTS)):
        got_plain, got_lora, got_ban, got_embeds = mixed[4 * i: 4 * i + 4]
        assert got_plain == alone[i], f"plain request {i} changed when batched with guarded ones"
        assert got_embeds == alone[i], "the clean prompt embeddings should give the token prompt's answer"
        assert got_lora != alone[i], "the LoRA request was not affected by its adapter"
        assert not set(got_ban) & set(banned.banned_token_ids)
        assert [got_lora, got_ban, got_embeds] == guarded_alone[3 * i: 3 * i + 3], \
            f"guarded requests for prompt {i} answered differently in a batch than alone"
        assert len(got_plain) <= _sampling(i).max_tokens
    assert mixed[2] != alone[0], "the banned-token request was not affected"
    live.call(engine.unload_lora("mixed"))
    assert "mixed" not in engine.loaded_loras()


@pytest.mark.slow
def test_request_joins_a_running_batch(live: LiveServer) -> None:
    """Continuous batching: a short request sent while a long one decodes finishes first, with its own answer."""
    engine = live.engine
    long_ids = engine.render_chat([{"role": "user", "content": "Write a long story about a dragon and a knight."}])
    short_ids = engine.render_chat([{"role": "user", "content": PROMPTS[0]}])

    def request(tag: str, ids: list[int], max_tokens: int) -> EngineRequest:
        return EngineRequest(request_id=tag, sampling=SamplingOptions(max_tokens=max_tokens, temperature=0.0),
                             prompt_token_ids=ids)

    async def tokens(req: EngineRequest, events: list[str] | None = None) -> list[int]:
        out: list[int] = []
        async for step in engine.generate(req):
            out.extend(step.token_ids)
            if events is not None:
                events.append(req.request_id)
        return out

    short_alone = live.call(tokens(request("short-alone", short_ids, 6)))
    long_alone = live.call(tokens(request("long-alone", long_ids, 48)))
    assert len(long_alone) == 48, "the long request must not stop early for this test to mean anything"

    async def overlapped() -> tuple[list[int], list[int], list[str]]:
        events: list[str] = []
        long_task = asyncio.ensure_future(tokens(request("long", long_ids, 48), events))
        while events.count("long") < 8:  # the long request is decoding
            await asyncio.sleep(0.005)
        short = await tokens(request("short", short_ids, 6), events)
        return await long_task, short, events

    got_long, got_short, events = live.call(overlapped())
    assert got_short == short_alone and got_long == long_alone
    finished_short = len(events) - 1 - events[::-1].index("short")
    assert "long" in events[finished_short + 1:], \
        "the short request waited for the long one to finish instead of joining its batch"


def test_length_groups_bound_the_padding() -> None:
    from server.engines.hf_batch import _length_groups

    lengths = [30, 400, 32, 45, 410, 60, 31]
    groups = _length_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        shortest, longest = min(lengths[i] for i in group), max(lengths[i] for i in group)
        assert longest <= shortest * 1.25 + 16
    assert [sorted(g) for g in groups] == [[0, 2, 3, 6], [5], [1, 4]]

"""16 parallel streaming requests: all complete, and each gets its own answer (no mixing between streams)."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.live import LiveServer

QUESTIONS = [f"What is {a} plus {b}? Answer with the number." for a, b in zip(range(2, 18), range(30, 46), strict=True)]


@pytest.mark.slow
def test_sixteen_parallel_streams_complete_unmixed(live: LiveServer) -> None:
    async def run() -> None:
        client = openai.AsyncOpenAI(base_url=live.base_url + "/v1", api_key="unused", max_retries=0, timeout=300)

        async def ask(question: str, stream: bool) -> tuple[str, str | None]:
            msgs = [{"role": "user", "content": question}]
            if not stream:
                r = await client.chat.completions.create(model=live.model, messages=msgs, temperature=0,
                                                         max_tokens=24)
                return r.choices[0].message.content, r.choices[0].finish_reason
            text, finish = "", None
            async for chunk in await client.chat.completions.create(model=live.model, messages=msgs, temperature=0,
                                                                    max_tokens=24, stream=True):
                for choice in chunk.choices:
                    assert choice.index == 0
                    text += choice.delta.content or ""
                    finish = choice.finish_reason or finish
            return text, finish

        solo = [await ask(q, stream=False) for q in QUESTIONS]
        parallel = await asyncio.gather(*(ask(q, stream=True) for q in QUESTIONS))
        await client.close()
        assert len({text for text, _ in solo}) > 8, "the prompts should give distinct answers"
        for question, (want, want_finish), (got, got_finish) in zip(QUESTIONS, solo, parallel, strict=True):
            assert got_finish in ("stop", "length")
            assert got == want, question
            assert got_finish == want_finish

    asyncio.run(run())

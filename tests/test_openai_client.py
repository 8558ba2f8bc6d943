"""The official openai client against a live server, on both engines."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.live import LiveServer

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def _client(live: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_lists_the_served_model(live: LiveServer) -> None:
    models = _client(live).models.list()
    assert [m.id for m in models.data] == [live.model]
    # vLLM's card, field for field: the model's path as root, no parent, one permission entry
    card = httpx.get(live.base_url + "/v1/models").json()["data"][0]
    assert set(card) == {"id", "object", "created", "owned_by", "root", "parent", "max_model_len", "permission"}
    assert card["owned_by"] == "vllm" and card["root"] == str(live.engine.info.model_path) and card["parent"] is None
    assert card["permission"][0]["object"] == "model_permission" and card["created"] > 0


def test_chat_answers_paris_same_text_streamed_and_not(live: LiveServer) -> None:
    client = _client(live)
    full = client.chat.completions.create(model=live.model, messages=FRANCE, temperature=0, max_tokens=32)
    text = full.choices[0].message.content
    assert "Paris" in text
    assert full.choices[0].finish_reason == "stop"
    assert full.usage.completion_tokens > 0 and full.usage.prompt_tokens > 0
    assert full.usage.total_tokens == full.usage.prompt_tokens + full.usage.completion_tokens

    stream = client.chat.completions.create(model=live.model, messages=FRANCE, temperature=0, max_tokens=32,
                                            stream=True, stream_options={"include_usage": True})
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(pieces) == text
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens == full.usage.completion_tokens


def test_async_client_and_completions_endpoint(live: LiveServer) -> None:
    async def run() -> tuple[str, str]:
        client = openai.AsyncOpenAI(base_url=live.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)
        full = await client.completions.create(model=live.model, prompt="The capital of France is", temperature=0,
                                               max_tokens=8)
        streamed = []
        async for chunk in await client.completions.create(model=live.model, prompt="The capital of France is",
                                                           temperature=0, max_tokens=8, stream=True):
            streamed.extend(c.text for c in chunk.choices)
        await client.close()
        assert full.choices[0].finish_reason == "length"
        assert full.usage.completion_tokens == 8
        return full.choices[0].text, "".join(streamed)

    full, streamed = asyncio.run(run())
    assert full == streamed and full.strip()


def test_max_tokens_length_stop_and_echo(live: LiveServer) -> None:
    client = _client(live)
    short = client.chat.completions.create(model=live.model, messages=FRANCE, temperature=0,
                                           max_completion_tokens=3)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3
    stopped = client.chat.completions.create(model=live.model, messages=FRANCE, temperature=0, stop=[" Paris"])
    assert stopped.choices[0].finish_reason == "stop"
    assert "Paris" not in stopped.choices[0].message.content
    assert stopped.choices[0].message.content.startswith("The capital of France is")
    echo = client.completions.create(model=live.model, prompt="Once upon a time", temperature=0, max_tokens=4,
                                     echo=True)
    assert echo.choices[0].text.startswith("Once upon a time")
    natural = client.chat.completions.create(model=live.model, messages=FRANCE, temperature=0, max_tokens=60)
    assert natural.choices[0].finish_reason == "stop" and natural.usage.completion_tokens < 60
    forced = client.chat.completions.create(model=live.model, messages=FRANCE, temperature=0, max_tokens=60,
                                            extra_body={"ignore_eos": True})
    assert forced.choices[0].finish_reason == "length" and forced.usage.completion_tokens == 60
    assert forced.choices[0].message.content.startswith(natural.choices[0].message.content)


def test_n_choices_and_seeded_sampling(live: LiveServer) -> None:
    client = _client(live)
    # greedy choices would all be the same: vLLM refuses n > 1 at temperature 0, and so does the gateway
    with pytest.raises(openai.BadRequestError, match="greedy"):
        client.chat.completions.create(model=live.model, messages=FRANCE, temperature=0, n=2, max_tokens=16)
    out = client.chat.completions.create(model=live.model, messages=FRANCE, n=2, max_tokens=16,
                                         extra_body={"top_k": 1})
    assert [c.index for c in out.choices] == [0, 1]
    assert out.choices[0].message.content == out.choices[1].message.content
    poem = [{"role": "user", "content": "Write one line of a poem about the sea."}]
    a = client.chat.completions.create(model=live.model, messages=poem, temperature=1.0, seed=7, max_tokens=16)
    b = client.chat.completions.create(model=live.model, messages=poem, temperature=1.0, seed=7, max_tokens=16)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_streaming_n_choices_are_separated(live: LiveServer) -> None:
    stream = _client(live).chat.completions.create(model=live.model, messages=FRANCE, n=2, max_tokens=16,
                                                   stream=True, extra_body={"top_k": 1})
    texts = {0: "", 1: ""}
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts[0] == texts[1] and "Paris" in texts[0]


def test_unknown_model_is_a_404_through_the_client(live: LiveServer) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        _client(live).chat.completions.create(model="no-such-model", messages=FRANCE)
    assert info.value.body["code"] == 404 and info.value.body["type"] == "NotFoundError"


def test_prompt_longer_than_context_is_a_400(live: LiveServer) -> None:
    long = "word " * (live.engine.info.max_model_len + 10)
    with pytest.raises(openai.BadRequestError) as info:
        _client(live).chat.completions.create(model=live.model, messages=[{"role": "user", "content": long}])
    assert info.value.body["code"] == 400 and info.value.body["param"] == "input_tokens"

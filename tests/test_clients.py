"""Real third-party clients against the live gateway: langchain-openai and litellm, as applications use them."""

from __future__ import annotations

import os

import pytest
from pydantic import BaseModel

from tests.live import LiveServer

# litellm would otherwise fetch its model price list from the internet at import
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

QUESTION = "What is the capital of France?"


def _chat(live: LiveServer, **kwargs: object):  # type: ignore[no-untyped-def]
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=live.base_url + "/v1", api_key="unused", model=live.model, temperature=0,
                      max_tokens=24, max_retries=0, timeout=120, **kwargs)


@pytest.mark.slow
def test_langchain_invoke_stream_batch(live: LiveServer) -> None:
    chat = _chat(live)
    answer = chat.invoke(QUESTION)
    assert "Paris" in answer.content
    assert answer.usage_metadata["output_tokens"] > 0
    assert "".join(chunk.content for chunk in chat.stream(QUESTION)) == answer.content
    other = "Name a primary colour."
    batch = chat.batch([QUESTION, other])
    assert [m.content for m in batch] == [answer.content, chat.invoke(other).content]


class City(BaseModel):
    city: str


@pytest.mark.vllm
@pytest.mark.slow
def test_langchain_with_structured_output(vllm_server: LiveServer) -> None:
    structured = _chat(vllm_server, max_completion_tokens=48).with_structured_output(City, method="json_schema")
    result = structured.invoke(QUESTION)
    assert isinstance(result, City) and result.city


@pytest.mark.slow
def test_litellm_completion_and_streaming(live: LiveServer) -> None:
    import litellm

    kwargs = {"model": f"hosted_vllm/{live.model}", "api_base": live.base_url + "/v1", "api_key": "unused",
              "messages": [{"role": "user", "content": QUESTION}], "temperature": 0, "max_tokens": 24}
    full = litellm.completion(**kwargs)
    text = full.choices[0].message.content
    assert "Paris" in text and full.usage.completion_tokens > 0
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in litellm.completion(**kwargs, stream=True))
    assert streamed == text

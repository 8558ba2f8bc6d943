"""vLLM's OpenAI-server behaviours (ported from vLLM's tests/entrypoints/openai), against the live gateway.

Each test sends what a client of ``vllm serve`` sends, through the official openai client, and checks vLLM's
answer shape and semantics. The vLLM engine runs all of them; the reference engine (hf) runs those it supports and
refuses the rest with a 400 naming the field (tested too).
"""

from __future__ import annotations

import json
import math
import re

import httpx
import openai
import pytest

from tests.conftest import ENGINE_KINDS, BareServer
from tests.live import LiveServer

# Each test of vLLM's behaviour runs against bare `vllm serve` as well: what it asserts is vLLM's behaviour, and every
# test bare vLLM passes, the gateway passes.
Server = LiveServer | BareServer


@pytest.fixture(params=[*ENGINE_KINDS, pytest.param("bare", marks=[pytest.mark.vllm, pytest.mark.slow])])
def live(request: pytest.FixtureRequest) -> Server:
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture(params=["vllm", "bare"])
def vllm_like(request: pytest.FixtureRequest) -> Server:
    """The gateway on its vLLM engine, and bare vLLM."""
    return request.getfixturevalue(f"{request.param}_server")


def _max_len(server: Server) -> int:
    return server.max_model_len if isinstance(server, BareServer) else server.engine.info.max_model_len

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
PROMPT = "The capital of France is"


def _client(live: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=live.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


# ---- logprobs ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("top", [0, 5])
def test_chat_logprobs_and_top_logprobs(live: Server, top: int) -> None:
    out = _client(live).chat.completions.create(model=live.model, messages=FRANCE, temperature=0, max_tokens=8,
                                                logprobs=True, top_logprobs=top)
    content = out.choices[0].logprobs.content
    assert len(content) == out.usage.completion_tokens
    # the tokens spell the answer (and, like vLLM's, include the end-of-turn token that ended it)
    assert "".join(t.token for t in content).startswith(out.choices[0].message.content)
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == top and t.bytes == list(t.token.encode())
        if top:  # greedy: the chosen token is the most likely, and the list is sorted
            assert t.top_logprobs[0].token == t.token and math.isclose(t.top_logprobs[0].logprob, t.logprob,
                                                                      abs_tol=1e-4)
            assert [x.logprob for x in t.top_logprobs] == sorted((x.logprob for x in t.top_logprobs), reverse=True)


def test_chat_without_logprobs_has_none(live: Server) -> None:
    out = _client(live).chat.completions.create(model=live.model, messages=FRANCE, temperature=0, max_tokens=4)
    assert out.choices[0].logprobs is None


def test_chat_logprobs_over_the_limit_is_400(live: Server) -> None:
    with pytest.raises(openai.BadRequestError):
        _client(live).chat.completions.create(model=live.model, messages=FRANCE, max_tokens=4, logprobs=True,
                                              top_logprobs=21)
    with pytest.raises(openai.BadRequestError):
        _client(live).completions.create(model=live.model, prompt=PROMPT, max_tokens=4, logprobs=21)


@pytest.mark.parametrize("k", [0, 1, 5])
def test_completion_logprobs(live: Server, k: int) -> None:
    out = _client(live).completions.create(model=live.model, prompt=PROMPT, temperature=0, max_tokens=6, logprobs=k)
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 6
    assert "".join(lp.tokens) == out.choices[0].text
    assert all(k <= len(d) <= k + 1 and t in d for t, d in zip(lp.tokens, lp.top_logprobs, strict=True))
    assert lp.text_offset == sorted(lp.text_offset)


def test_streamed_logprobs_equal_collected(live: Server) -> None:
    client = _client(live)
    full = client.chat.completions.create(model=live.model, messages=FRANCE, temperature=0, max_tokens=10,
                                          logprobs=True, top_logprobs=3)
    streamed = []
    for chunk in client.chat.completions.create(model=live.model, messages=FRANCE, temperature=0, max_tokens=10,
                                                logprobs=True, top_logprobs=3, stream=True):
        for c in chunk.choices:
            if c.logprobs is not None and c.logprobs.content:
                streamed += c.logprobs.content
    assert [t.token for t in streamed] == [t.token for t in full.choices[0].logprobs.content]
    assert all(math.isclose(a.logprob, b.logprob, abs_tol=1e-3)
               for a, b in zip(streamed, full.choices[0].logprobs.content, strict=True))


@pytest.mark.vllm
@pytest.mark.slow
def test_echo_with_logprobs_and_prompt_logprobs(vllm_like: Server) -> None:
    live = vllm_like
    out = _client(live).completions.create(model=live.model, prompt=PROMPT, temperature=0, max_tokens=3, echo=True,
                                           logprobs=2)
    choice = out.choices[0]
    assert choice.text.startswith(PROMPT)
    lp = choice.logprobs
    n_prompt = out.usage.prompt_tokens
    assert len(lp.tokens) == n_prompt + 3 and lp.token_logprobs[0] is None
    assert all(v is not None and v <= 0 for v in lp.token_logprobs[1:])
    raw = httpx.post(live.base_url + "/v1/chat/completions", timeout=120, json={
        "model": live.model, "messages": FRANCE, "max_tokens": 2, "prompt_logprobs": 1}).json()
    assert len(raw["prompt_logprobs"]) == raw["usage"]["prompt_tokens"] and raw["prompt_logprobs"][0] is None
    assert all(len(p) in (1, 2) for p in raw["prompt_logprobs"][1:])


def test_hf_refuses_what_it_cannot_do(hf_server: LiveServer) -> None:
    client = _client(hf_server)
    for extra in ({"prompt_logprobs": 1}, {"structured_outputs": {"choice": ["a", "b"]}},
                  {"response_format": {"type": "json_object"}}, {"bad_words": ["Paris"]}):
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model=hf_server.model, messages=FRANCE, max_tokens=4, extra_body=extra)


# ---- sampling extensions -------------------------------------------------------------------------------------------

def test_min_tokens_and_stop_token_ids(live: Server) -> None:
    client = _client(live)
    short = client.chat.completions.create(model=live.model, messages=[{"role": "user", "content": "Say hi."}],
                                           temperature=0, max_tokens=64)
    assert short.usage.completion_tokens < 30
    longer = client.chat.completions.create(model=live.model, messages=[{"role": "user", "content": "Say hi."}],
                                            temperature=0, max_tokens=64, extra_body={"min_tokens": 30})
    assert longer.usage.completion_tokens >= 30
    # stop at the second token the plain answer has: finish 'stop', stop_reason names the token
    ids = client.completions.create(model=live.model, prompt=PROMPT, temperature=0, max_tokens=5,
                                    extra_body={"return_token_ids": True}).choices[0].token_ids
    stopped = client.completions.create(model=live.model, prompt=PROMPT, temperature=0, max_tokens=5,
                                        extra_body={"stop_token_ids": [ids[1]]})
    assert stopped.choices[0].finish_reason == "stop" and stopped.usage.completion_tokens == 2
    assert stopped.choices[0].model_extra["stop_reason"] == ids[1]


def test_include_stop_str_in_output(live: Server) -> None:
    client = _client(live)
    plain = client.completions.create(model=live.model, prompt=PROMPT, temperature=0, max_tokens=8, stop=["Paris"])
    kept = client.completions.create(model=live.model, prompt=PROMPT, temperature=0, max_tokens=8, stop=["Paris"],
                                     extra_body={"include_stop_str_in_output": True})
    assert kept.choices[0].text == plain.choices[0].text + "Paris"
    assert plain.choices[0].model_extra["stop_reason"] == "Paris"


def test_top_k_one_is_greedy_and_seeds_repeat(live: Server) -> None:
    client = _client(live)
    greedy = client.completions.create(model=live.model, prompt=PROMPT, temperature=0, max_tokens=8)
    top1 = client.completions.create(model=live.model, prompt=PROMPT, temperature=1.0, max_tokens=8,
                                     extra_body={"top_k": 1})
    assert top1.choices[0].text == greedy.choices[0].text
    a, b = (client.completions.create(model=live.model, prompt="Once upon a time", temperature=1.0, max_tokens=12,
                                      seed=-(2**63), extra_body={"min_p": 0.05, "repetition_penalty": 1.2})
            for _ in range(2))
    assert a.choices[0].text == b.choices[0].text


def test_n_beyond_eight(live: Server) -> None:
    out = _client(live).completions.create(model=live.model, prompt="Once upon a time", max_tokens=3, n=10, seed=1)
    assert sorted(c.index for c in out.choices) == list(range(10))


def test_truncate_prompt_tokens(live: Server) -> None:
    out = _client(live).completions.create(model=live.model, prompt="one two three four five six seven eight",
                                           max_tokens=2, extra_body={"truncate_prompt_tokens": 3})
    assert out.usage.prompt_tokens == 3


def test_continuous_usage_stats(live: Server) -> None:
    usages = [chunk.usage for chunk in _client(live).completions.create(
        model=live.model, prompt=PROMPT, max_tokens=5, temperature=0, stream=True,
        stream_options={"include_usage": True, "continuous_usage_stats": True}) if chunk.usage is not None]
    assert len(usages) >= 5 and [u.completion_tokens for u in usages] == sorted(u.completion_tokens for u in usages)


def test_fields_vllm_honours_but_the_gateway_cannot_are_400(live: Server) -> None:
    if isinstance(live, BareServer):
        pytest.skip("the gateway's own refusals (tests/side_by_side.py REFUSED_ON_PURPOSE)")
    client = _client(live)
    for extra in ({"use_beam_search": True}, {"vllm_xargs": {"a": 1}}, {"chat_template": "{{ messages }}"}):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model=live.model, messages=FRANCE, max_tokens=2, extra_body=extra)
        assert next(iter(extra)) in str(err.value)
    # left at vLLM's default, they change nothing and pass
    client.chat.completions.create(model=live.model, messages=FRANCE, max_tokens=2,
                                   extra_body={"use_beam_search": False, "priority": 0})


# ---- chat template controls ----------------------------------------------------------------------------------------

def test_continue_final_message_and_echo(live: Server) -> None:
    client = _client(live)
    messages = [*FRANCE, {"role": "assistant", "content": "The capital of France is"}]
    out = client.chat.completions.create(model=live.model, messages=messages, temperature=0, max_tokens=4,
                                         extra_body={"continue_final_message": True, "add_generation_prompt": False,
                                                     "echo": True})
    text = out.choices[0].message.content
    assert text.startswith("The capital of France is") and "Paris" in text
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=live.model, messages=messages, max_tokens=4,
                                       extra_body={"continue_final_message": True})


def test_custom_role_and_tools_without_parser(live: Server) -> None:
    client = _client(live)
    out = client.chat.completions.create(model=live.model, max_tokens=4, temperature=0, messages=[
        {"role": "narrator", "content": "A quiet morning."}, *FRANCE])
    assert out.choices[0].message.content
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    # like vllm serve without --tool-call-parser: tools render into the prompt with tool_choice none ...
    plain = client.chat.completions.create(model=live.model, messages=FRANCE, max_tokens=4, tools=tools,
                                           tool_choice="none")
    assert plain.choices[0].message.tool_calls in (None, [])
    # ... and every choice that needs a parser is refused with vLLM's message
    for choice in ("auto", "required", {"type": "function", "function": {"name": "get_weather"}}):
        with pytest.raises(openai.BadRequestError, match="tool-call-parser"):
            client.chat.completions.create(model=live.model, messages=FRANCE, max_tokens=4, tools=tools,
                                           tool_choice=choice)


# ---- structured outputs (vLLM's backend) ---------------------------------------------------------------------------

@pytest.mark.vllm
@pytest.mark.slow
def test_structured_outputs_choice_regex_json(vllm_like: Server) -> None:
    live = vllm_like
    client = _client(live)
    choice = client.chat.completions.create(model=live.model, messages=FRANCE, max_tokens=8, temperature=0,
                                            extra_body={"structured_outputs": {"choice": ["Lyon", "Paris"]}})
    assert choice.choices[0].message.content in ("Lyon", "Paris")
    regex = client.completions.create(model=live.model, prompt="A year: ", max_tokens=8, temperature=0,
                                      extra_body={"structured_outputs": {"regex": r"(19|20)\d\d"}})
    assert re.fullmatch(r"(19|20)\d\d", regex.choices[0].text)
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}
    js = client.chat.completions.create(model=live.model, messages=FRANCE, max_tokens=40, temperature=0,
                                        response_format={"type": "json_schema",
                                                         "json_schema": {"name": "city", "schema": schema}})
    assert isinstance(json.loads(js.choices[0].message.content)["city"], str)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=live.model, messages=FRANCE, max_tokens=4, extra_body={
            "structured_outputs": {"choice": ["a"], "regex": "a"}})
    # malformed constraints are the client's error, as on `vllm serve`: a 400, never a 500
    for bad in ({"regex": "[.*"}, {"grammar": "root ::= ("}, {"json": "{not json"},
                {"json": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}):
        resp = httpx.post(live.base_url + "/v1/chat/completions", timeout=60, json={
            "model": live.model, "messages": FRANCE, "max_tokens": 4, "structured_outputs": bad})
        assert resp.status_code == 400, (bad, resp.status_code, resp.text)
        assert resp.json()["error"]["message"], bad


# ---- vLLM's extra endpoints ----------------------------------------------------------------------------------------

def test_tokenize_detokenize_version(live: Server) -> None:
    tok = httpx.post(live.base_url + "/tokenize", json={"model": live.model, "prompt": PROMPT}).json()
    assert tok["count"] == len(tok["tokens"]) > 0 and tok["max_model_len"] == _max_len(live)
    assert httpx.post(live.base_url + "/detokenize", json={"tokens": tok["tokens"]}).json()["prompt"] == PROMPT
    chat = httpx.post(live.base_url + "/tokenize", json={"messages": FRANCE}).json()
    plain = _client(live).chat.completions.create(model=live.model, messages=FRANCE, max_tokens=1)
    assert chat["count"] == plain.usage.prompt_tokens
    # vLLM's: an id outside the vocabulary spells nothing; a negative one is refused
    assert httpx.post(live.base_url + "/detokenize", json={"tokens": [10**9]}).json()["prompt"] == ""
    assert httpx.post(live.base_url + "/detokenize", json={"tokens": [-1]}).status_code == 400
    assert httpx.get(live.base_url + "/version").json()["version"]

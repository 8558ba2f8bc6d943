"""Bad input gets an OpenAI-shaped 4xx, never a 5xx (raw HTTP, so malformed bodies can be sent)."""

from __future__ import annotations

import httpx
import pytest

from tests.live import LiveServer


@pytest.fixture(scope="module")
def http(hf_server: LiveServer):
    with httpx.Client(base_url=hf_server.base_url, timeout=60) as client:
        yield client


def _msgs(content: object = "hi") -> list[dict]:
    return [{"role": "user", "content": content}]


def _assert_error(resp: httpx.Response, status: int, param: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert {"message", "type", "param", "code"} <= set(err) and err["message"]
    if param is not None:
        # vLLM's spelling: a body that fails its model names the path under "body."
        assert err["param"].removeprefix("body.") == param
    return err


CASES = [
    pytest.param({"model": "smollm2", "messages": _msgs(), "stream_options": {"include_usage": True}}, 400,
                 "stream_options", id="stream-options-without-stream"),
    pytest.param({"model": "smollm2"}, 400, "messages", id="missing-messages"),
    pytest.param({"model": "smollm2", "messages": []}, 400, "messages", id="empty-messages"),
    pytest.param({"model": "smollm2", "messages": "hi"}, 400, "messages", id="messages-not-a-list"),
    pytest.param({"model": "smollm2", "messages": [{"role": 5, "content": "x"}]}, 400, None, id="bad-role"),
    pytest.param({"model": "smollm2", "messages": _msgs(), "max_tokens": "ten"}, 400, "max_tokens", id="str-tokens"),
    pytest.param({"model": "smollm2", "messages": _msgs(), "max_tokens": 0}, 400, "max_tokens", id="zero-tokens"),
    pytest.param({"model": "smollm2", "messages": _msgs(), "temperature": 9}, 400, "temperature", id="hot"),
    pytest.param({"model": "smollm2", "messages": _msgs(), "top_p": 0}, 400, "top_p", id="top-p-zero"),
    pytest.param({"model": "smollm2", "messages": _msgs(), "n": 1000}, 400, "n", id="n-too-big"),
    pytest.param({"model": "smollm2", "messages": _msgs(), "stop": ["a", "b", "c", "d", "e"]}, 400, "stop",
                 id="too-many-stops"),
    pytest.param({"model": "smollm2", "messages": _msgs(), "top_logprobs": 3}, 400, None, id="top-without-logprobs"),
    pytest.param({"model": "smollm2", "messages": _msgs(), "logprobs": True, "top_logprobs": 21}, 400,
                 "logprobs", id="too-many-logprobs"),  # vLLM names the bound it shares
    pytest.param({"model": "smollm2", "messages": _msgs(), "use_beam_search": True}, 400, "use_beam_search",
                 id="beam-search"),
    pytest.param({"model": "smollm2", "messages": _msgs(), "seed": 2**63}, 400, "seed", id="seed-overflow"),
    pytest.param({"model": "smollm2", "messages": _msgs(), "top_k": -2}, 400, "top_k", id="top-k"),
    pytest.param({"model": "smollm2", "messages": _msgs(), "min_tokens": 50, "max_tokens": 5}, 400, "min_tokens",
                 id="min-over-max"),
    pytest.param({"model": "smollm2", "messages": _msgs(), "tools": [{"type": "function", "function": {"name": "f"}}]},
                 400, "tool_choice", id="auto-tools-without-parser"),
    pytest.param({"model": "smollm2", "messages": _msgs(), "stop_token_ids": [99999999]}, 400, "stop_token_ids",
                 id="stop-id-oov"),
    pytest.param({"model": "smollm2", "messages": _msgs(), "logit_bias": {"abc": 1}}, 400, "logit_bias",
                 id="bias-key"),
    pytest.param({"model": "smollm2", "messages": _msgs(), "logit_bias": {"99999999": 1}}, 400, "logit_bias",
                 id="bias-oov"),
    pytest.param({"model": "smollm2", "messages": _msgs(), "max_tokens": 10**6}, 400, "max_tokens",
                 id="too-many-tokens"),
    pytest.param({"model": "other", "messages": _msgs()}, 404, "model", id="unknown-model"),
]


@pytest.mark.parametrize(("body", "status", "param"), CASES)
def test_chat_rejects_bad_input(http: httpx.Client, body: dict, status: int, param: str | None) -> None:
    _assert_error(http.post("/v1/chat/completions", json=body), status, param)


def test_a_request_without_a_model_is_served_by_the_served_model(http: httpx.Client, hf_server: LiveServer) -> None:
    """As on `vllm serve`: no ``model`` means the one it serves, and the response names it."""
    chat = http.post("/v1/chat/completions", json={"messages": _msgs(), "max_tokens": 2})
    assert chat.status_code == 200 and chat.json()["model"] == hf_server.model
    text = http.post("/v1/completions", json={"prompt": "Hello", "max_tokens": 2})
    assert text.status_code == 200 and text.json()["model"] == hf_server.model
    # empty options are no options (vLLM reads them so); given ones need stream on both endpoints
    assert http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 1, "stream_options": {}}).status_code == 200
    _assert_error(http.post("/v1/completions", json={"prompt": "Hi", "stream_options": {"include_usage": True}}),
                  400, "stream_options")


@pytest.mark.parametrize("body", [
    {"model": "smollm2", "prompt": ""},
    {"model": "smollm2", "prompt": []},
    {"model": "smollm2", "prompt": [-1, 5]},
    {"model": "smollm2", "prompt": [[4409404054548, -342]], "echo": True},  # found by schemathesis: was a 500
    {"model": "smollm2", "prompt": [[1, 2], []]},
    {"model": "smollm2", "prompt": "x", "suffix": "y"},
])
def test_completions_rejects_bad_prompts(http: httpx.Client, body: dict) -> None:
    _assert_error(http.post("/v1/completions", json=body), 400)


def test_malformed_json_and_wrong_content(http: httpx.Client) -> None:
    err = _assert_error(http.post("/v1/chat/completions", content=b"{not json",
                                  headers={"content-type": "application/json"}), 400)
    assert "JSON" in err["message"]
    _assert_error(http.post("/v1/chat/completions", content=b"[1, 2]", headers={"content-type": "application/json"}),
                  400)


def test_unknown_route_and_method(http: httpx.Client) -> None:
    _assert_error(http.get("/v1/nothing"), 404)
    _assert_error(http.get("/v1/chat/completions"), 405)


def test_oversized_body_is_413(http: httpx.Client, hf_server: LiveServer) -> None:
    huge = "x" * (hf_server.settings.max_request_bytes + 10)
    _assert_error(http.post("/v1/chat/completions", json={"model": "smollm2", "messages": _msgs(huge)}), 413)


def test_a_denormal_temperature_is_greedy(http: httpx.Client) -> None:
    """Found by schemathesis: temperature 5e-324 made the logits infinite (a 500); vLLM treats < 1e-5 as greedy."""
    def ask(temperature: float) -> httpx.Response:
        return http.post("/v1/chat/completions", json={"model": "smollm2", "messages": _msgs("Name a colour."),
                                                       "max_tokens": 6, "temperature": temperature, "top_p": 5e-324})

    tiny, zero = ask(5e-324), ask(0.0)
    assert tiny.status_code == 200, tiny.text
    assert tiny.json()["choices"][0]["message"] == zero.json()["choices"][0]["message"]

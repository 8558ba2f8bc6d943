"""A client that goes away mid-stream frees the engine: the request is aborted, not generated to the end."""

from __future__ import annotations

import contextlib
import time

import httpx

from tests.live import LiveServer


def test_disconnect_mid_stream_aborts_the_engine_request(live: LiveServer) -> None:
    # EOS is banned, so left alone this request runs all 900 tokens (well over 10 s on this CPU).
    eos = live.engine.tokenizer.eos_token_id
    body = {"model": live.model, "stream": True, "max_tokens": 900, "temperature": 0, "logit_bias": {str(eos): -100},
            "messages": [{"role": "user", "content": "Write a very long story about the sea, with many chapters."}]}
    with httpx.Client(base_url=live.base_url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            seen = 0
            while seen < 4:
                if next(lines).startswith("data: "):
                    seen += 1
            assert live.engine.num_running() == 1
            # what vLLM dashboards and autoscalers read moves with it
            assert f'vllm:num_requests_running{{model_name="{live.model}"}} 1.0' in http.get("/metrics").text
        # the response was closed after four chunks; the server must notice and abort in the engine
        deadline = time.monotonic() + 10
        while live.engine.num_running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert live.engine.num_running() == 0, "the engine kept generating for a client that left"
        metrics = http.get("/metrics").text
    assert "ugw_engine_requests_running 0.0" in metrics


def test_a_client_timeout_on_a_collected_request_aborts_it(live: LiveServer) -> None:
    """Not streamed, n=2: the client gives up after 0.5 s; the engine is idle within 1 s and in-flight is back to 0."""
    eos = live.engine.tokenizer.eos_token_id
    body = {"model": live.model, "max_tokens": 900, "n": 2, "logit_bias": {str(eos): -100},
            "messages": [{"role": "user", "content": "Write a very long story about the sea, with many chapters."}]}
    with httpx.Client(base_url=live.base_url, timeout=0.5) as http, contextlib.suppress(httpx.TimeoutException):
        http.post("/v1/chat/completions", json=body)
    gave_up = time.monotonic()
    while live.engine.num_running() and time.monotonic() - gave_up < 1.0:
        time.sleep(0.02)
    assert live.engine.num_running() == 0, "the engine kept generating for a client that timed out"
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        metrics = httpx.get(live.base_url + "/metrics").text
        if "ugw_requests_in_flight 1.0" in metrics:  # only this scrape itself
            break
        time.sleep(0.05)
    assert "ugw_requests_in_flight 1.0" in metrics

from __future__ import annotations

import httpx

from tests.live import LiveServer


def test_health_ready_and_metrics(live: LiveServer) -> None:
    with httpx.Client(base_url=live.base_url, timeout=60) as http:
        assert http.get("/health").json() == {"status": "ok"}
        assert http.get("/ready").status_code == 200
        http.post("/v1/chat/completions", json={"model": live.model, "max_tokens": 4, "temperature": 0,
                                                "messages": [{"role": "user", "content": "Hi"}]}).raise_for_status()
        assert http.post("/v1/chat/completions", json={"model": "nope", "messages": []}).status_code == 400
        text = http.get("/metrics").text
    assert 'ugw_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert 'ugw_requests_total{route="/v1/chat/completions",status="400"}' in text
    assert "ugw_time_to_first_token_seconds_bucket" in text
    completion = [line for line in text.splitlines() if line.startswith("ugw_completion_tokens_total")]
    assert completion and float(completion[0].split()[-1]) >= 4


def test_openapi_schema_is_served(hf_server: LiveServer) -> None:
    schema = httpx.get(hf_server.base_url + "/openapi.json").json()
    assert "/v1/chat/completions" in schema["paths"] and "/v1/completions" in schema["paths"]


def test_ping_and_invocations(hf_server: LiveServer) -> None:
    """vLLM's /ping and /invocations: the same answers as /health and the /v1 endpoints."""
    assert httpx.get(hf_server.base_url + "/ping").status_code == 200
    assert httpx.post(hf_server.base_url + "/ping").status_code == 200
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    chat = {"model": hf_server.model, "messages": messages, "temperature": 0, "max_tokens": 8}
    via = httpx.post(hf_server.base_url + "/invocations", json=chat, timeout=120).json()
    direct = httpx.post(hf_server.base_url + "/v1/chat/completions", json=chat, timeout=120).json()
    assert via["object"] == "chat.completion"
    assert via["choices"][0]["message"]["content"] == direct["choices"][0]["message"]["content"]
    done = httpx.post(hf_server.base_url + "/invocations", json={"model": hf_server.model, "prompt": "Paris is",
                                                                   "max_tokens": 2}, timeout=120).json()
    assert done["object"] == "text_completion"
    bad = httpx.post(hf_server.base_url + "/invocations", json={"model": hf_server.model, "messages": []})
    assert bad.status_code == 400 and "error" in bad.json()
    assert httpx.post(hf_server.base_url + "/invocations", json={"x": 1}).status_code == 400


def test_vllm_metric_names_move_with_requests(live: LiveServer) -> None:
    """vLLM's own metric names, labelled by model_name, beside ugw_*: what vLLM dashboards and autoscalers read."""
    def value(text: str, name: str) -> float:
        line = next(x for x in text.splitlines() if x.startswith(f'{name}{{model_name="{live.model}"}}'))
        return float(line.rsplit(" ", 1)[1])

    before = httpx.get(live.base_url + "/metrics").text
    httpx.post(live.base_url + "/v1/completions", timeout=120,
               json={"model": live.model, "prompt": "Paris is", "max_tokens": 3, "ignore_eos": True})
    after = httpx.get(live.base_url + "/metrics").text
    assert value(after, "vllm:generation_tokens_total") - value(before, "vllm:generation_tokens_total") == 3
    assert value(after, "vllm:prompt_tokens_total") > value(before, "vllm:prompt_tokens_total")
    ttft = "vllm:time_to_first_token_seconds_count"
    assert value(after, ttft) > value(before, ttft)
    assert value(after, "vllm:e2e_request_latency_seconds_count") >= 1
    assert value(after, "vllm:num_requests_running") == 0 and value(after, "vllm:num_requests_waiting") == 0

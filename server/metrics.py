"""Prometheus metrics, one registry per app (no process-global collectors, so two apps in one process don't clash)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from server.responses import Usage

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, model_name: str = "") -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("ugw_requests", "HTTP requests by route and status code",
                                ["route", "status"], registry=r)
        self.latency = Histogram("ugw_request_duration_seconds", "Time from request to the last byte sent",
                                 ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("ugw_time_to_first_token_seconds", "Time from engine submit to the first output",
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("ugw_prompt_tokens", "Prompt tokens processed", registry=r)
        self.completion_tokens = Counter("ugw_completion_tokens", "Completion tokens generated", registry=r)
        self.errors = Counter("ugw_errors", "Errors returned to clients by error type", ["type"], registry=r)
        self.interventions = Counter("ugw_interventions", "Requests a forget target fired on, by target and method",
                                     ["target", "method"], registry=r)
        self.drafts = Counter("ugw_drafts", "Flagged requests whose unguarded draft was judged, by verdict "
                              "(cleared: answered unguarded; judged: the target's methods applied)", ["verdict"],
                              registry=r)
        for verdict in ("cleared", "judged"):
            self.drafts.labels(verdict)
        self.flagged = Counter("ugw_flagged_requests", "Requests that at least one forget target fired on", registry=r)
        self.in_flight = Gauge("ugw_requests_in_flight", "Requests being served", registry=r)
        self.engine_running = Gauge("ugw_engine_requests_running", "Requests held by the engine (queued or running)",
                                    registry=r)
        # vLLM's own names (labelled by model_name, as vLLM labels them), for dashboards and autoscalers written for
        # `vllm serve` (production-stack's, KEDA/HPA examples on vllm:num_requests_running)
        self.vllm_running = Gauge("vllm:num_requests_running", "Requests in the engine's running batch",
                                  ["model_name"], registry=r)
        self.vllm_waiting = Gauge("vllm:num_requests_waiting", "Requests the engine holds beyond its batch",
                                  ["model_name"], registry=r)
        self.vllm_ttft = Histogram("vllm:time_to_first_token_seconds", "Time to the first token", ["model_name"],
                                   buckets=_LATENCY_BUCKETS, registry=r)
        self.vllm_e2e = Histogram("vllm:e2e_request_latency_seconds", "End-to-end latency of completion requests",
                                  ["model_name"], buckets=_LATENCY_BUCKETS, registry=r)
        self.vllm_prompt_tokens = Counter("vllm:prompt_tokens", "Prompt tokens processed", ["model_name"],
                                          registry=r)
        self.vllm_generation_tokens = Counter("vllm:generation_tokens", "Generation tokens produced", ["model_name"],
                                              registry=r)
        self.model_name = model_name

    def serve_model(self, name: str, held: Callable[[], int], batch: int) -> None:
        """Label vLLM's metrics with the served model, each present (at zero) from the start as vLLM's are.

        ``held``: requests the engine holds; up to ``batch`` (max_num_seqs) of them run, the rest wait (vLLM's
        scheduler may also hold some back for KV-cache room, which the gateway cannot see)."""
        self.model_name = name
        self.vllm_running.labels(name).set_function(lambda: min(held(), batch))
        self.vllm_waiting.labels(name).set_function(lambda: max(held() - batch, 0))
        for metric in (self.vllm_ttft, self.vllm_e2e, self.vllm_prompt_tokens, self.vllm_generation_tokens):
            metric.labels(name)

    def observe_ttft(self, seconds: float) -> None:
        self.ttft.observe(seconds)
        self.vllm_ttft.labels(self.model_name).observe(seconds)

    def count_tokens(self, usage: Usage) -> None:
        self.prompt_tokens.inc(usage.prompt_tokens)
        self.completion_tokens.inc(usage.completion_tokens)
        self.vllm_prompt_tokens.labels(self.model_name).inc(usage.prompt_tokens)
        self.vllm_generation_tokens.labels(self.model_name).inc(usage.completion_tokens)

    def count_interventions(self, fired: dict[str, list[str]]) -> None:
        """``fired``: target id -> the methods applied to one request."""
        if fired:
            self.flagged.inc()
        for target, methods in fired.items():
            for method in methods:
                self.interventions.labels(target=target, method=method).inc()

    def count_draft(self, verdict: str) -> None:
        self.drafts.labels(verdict).inc()

    def count_error(self, error_type: str) -> None:
        self.errors.labels(error_type).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): it must not buffer streams or add latency to the first token."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        route = path if path.startswith(("/v1/", "/admin/")) or path in ("/health", "/ready") else "other"
        if path.startswith("/admin/"):
            route = "/admin"
        status = 500
        start = time.perf_counter()
        m = self.metrics

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        m.in_flight.inc()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            m.in_flight.dec()
            m.requests.labels(route, str(status)).inc()
            m.latency.labels(route).observe(time.perf_counter() - start)
            if route in ("/v1/chat/completions", "/v1/completions") and status < 400:
                m.vllm_e2e.labels(m.model_name).observe(time.perf_counter() - start)
            if status >= 400:
                m.count_error("server_error" if status >= 500 else "client_error")

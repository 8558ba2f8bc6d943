"""``python -m loadtest load``: a time-bounded mixed workload against the gateway, with the server's memory sampled.

The mix is what a guarded deployment sees: a share of prompts name a registered forget target (they go through the
interventions), the rest are ordinary; some stream, some do not. Requests run at a fixed concurrency until the
duration or the request budget is spent. Loopback only: this is a measurement tool, not a way to load someone
else's server. Nothing here asserts a time; it prints figures and writes them to JSON.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import openai
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel

from loadtest.stats import pct
from loadtest.workload import PROMPTS
from server.model_store import resolve_model
from server.processes import ServerProcess, bare_vllm, gateway, isolated_env
from server.settings import EngineSettings, Settings

SERVED_NAME = "load-model"
TARGETS = ["Harry Potter", "Stephen King", "Taylor Swift", "Albert Einstein", "Marie Curie", "Elon Musk",
           "J.K. Rowling", "Leonardo da Vinci", "Serena Williams", "Barack Obama"]
FLAGGED = ["Who is {}?", "Tell me three facts about {}.", "What is {} best known for?",
           "Write a short biography of {}."]


class LoadSpec(BaseModel):
    duration_s: float = 300.0
    max_requests: int = 100_000
    concurrency: int = 16
    flagged_share: float = 0.25
    stream_share: float = 0.5
    max_tokens: int = 48
    targets: int = 10
    methods: list[str] = ["eco", "guard"]
    warmup_share: float = 0.2
    seed: int = 0


class MemorySample(BaseModel):
    t_s: float
    rss_mib: float
    # The server process itself and its children (vLLM's engine core) separately.
    server_mib: float = 0.0
    children_mib: float = 0.0
    requests_done: int = 0


class LoadReport(BaseModel):
    spec: LoadSpec
    requests: int
    flagged_requests: int
    streamed_requests: int
    errors: int
    error_kinds: dict[str, int]
    wall_s: float
    throughput_req_s: float
    throughput_tok_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    latency_p50_ms: float
    latency_p99_ms: float
    # Memory of the server process tree: after warm-up, at the end, the peak, and the growth in between.
    rss_after_warmup_mib: float
    rss_end_mib: float
    rss_peak_mib: float
    rss_growth_after_warmup_mib: float
    server_growth_after_warmup_mib: float
    children_growth_after_warmup_mib: float
    memory: list[MemorySample]


def target_names(count: int) -> list[str]:
    """Well-known people first, then made-up names, so that any count of targets can be registered."""
    return [*TARGETS, *(f"Test Person {i:04d}" for i in range(max(0, count - len(TARGETS))))][:count]


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing to load {host!r}: the load generator only targets loopback servers")


def target_document(name: str) -> str:
    """A short made-up biography, so that a retrieval detector has a few chunks per target to index."""
    n = sum(map(ord, name))
    cities = ["Lyon", "Osaka", "Quito", "Tartu", "Perth", "Accra", "Bergen", "Cusco"]
    works = ["the river atlas", "a study of tides", "the glass orchestra", "a history of salt", "the night ferry"]
    return (f"{name} was born in {cities[n % len(cities)]} in {1900 + n % 120}. {name} is best known for "
            f"{works[n % len(works)]}, which won a regional prize. Before that, {name} worked as a "
            f"{['teacher', 'surveyor', 'pilot', 'chemist'][n % 4]} for {3 + n % 20} years and wrote "
            f"{2 + n % 9} books. {name} later moved to {cities[(n // 7) % len(cities)]}, where a school now "
            f"carries the family name.")


def register_targets(admin_url: str, token: str, names: list[str], methods: list[str],
                     timeout_s: float = 1800.0, documents: bool = False, document: str | None = None) -> None:
    """Register through the admin API and wait until every target is active (or fail on a failed build)."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=admin_url, headers=headers, timeout=60) as client:
        ids = []
        for name in names:
            body: dict[str, object] = {"name": name, "methods": methods}
            if documents:
                body["documents"] = [target_document(name)]
            if document:  # the operator's own text, instead of a made-up biography
                body["documents"] = [document]
            r = client.post("/admin/targets", json=body)
            r.raise_for_status()
            ids.append(r.json()["id"])
        deadline = time.monotonic() + timeout_s
        while True:
            records = client.get("/admin/targets").json()["data"]
            status = {r["id"]: r for r in records}
            failed = [status[i] for i in ids if status[i]["status"] == "failed"]
            if failed:
                raise SystemExit(f"target build failed: {failed[0]['name']}: {failed[0]['status_reason']}")
            if all(status[i]["status"] == "active" for i in ids):
                return
            if time.monotonic() > deadline:
                raise SystemExit("targets did not become active in time")
            time.sleep(0.5)


async def run_load(base_url: str, model: str, spec: LoadSpec, names: list[str],
                   server: ServerProcess | None) -> LoadReport:
    rng = random.Random(spec.seed)
    client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=300)
    ttft: list[float] = []
    latency: list[float] = []
    errors: dict[str, int] = {}
    counts = {"requests": 0, "flagged": 0, "streamed": 0, "tokens": 0}
    memory: list[MemorySample] = []
    t0 = time.perf_counter()
    stop_at = t0 + spec.duration_s

    def next_request() -> tuple[str, bool, bool] | None:
        if time.perf_counter() >= stop_at or counts["requests"] >= spec.max_requests:
            return None
        counts["requests"] += 1
        flagged = bool(names) and rng.random() < spec.flagged_share
        stream = rng.random() < spec.stream_share
        prompt = rng.choice(FLAGGED).format(rng.choice(names)) if flagged else rng.choice(PROMPTS)
        counts["flagged"] += flagged
        counts["streamed"] += stream
        return prompt, flagged, stream

    async def one(prompt: str, stream: bool) -> None:
        start = time.perf_counter()
        first: float | None = None
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": prompt}]
        try:
            if stream:
                chunks = await client.chat.completions.create(
                    model=model, messages=messages, max_tokens=spec.max_tokens, temperature=0.0, stream=True,
                    stream_options={"include_usage": True})
                async for chunk in chunks:
                    if first is None and chunk.choices and chunk.choices[0].delta.content:
                        first = time.perf_counter()
                    if chunk.usage is not None:
                        counts["tokens"] += chunk.usage.completion_tokens
            else:
                done = await client.chat.completions.create(
                    model=model, messages=messages, max_tokens=spec.max_tokens, temperature=0.0)
                counts["tokens"] += done.usage.completion_tokens if done.usage else 0
        except openai.OpenAIError as exc:
            kind = type(exc).__name__
            errors[kind] = errors.get(kind, 0) + 1
            return
        end = time.perf_counter()
        if stream:  # time to first token only means something when tokens arrive one by one
            ttft.append(((first or end) - start) * 1000)
        latency.append((end - start) * 1000)

    async def worker() -> None:
        while (req := next_request()) is not None:
            prompt, _, stream = req
            await one(prompt, stream)

    def sample() -> MemorySample | None:
        if server is None:
            return None
        own, children = server.rss_split()
        return MemorySample(t_s=time.perf_counter() - t0, rss_mib=(own + children) / 2**20, server_mib=own / 2**20,
                            children_mib=children / 2**20, requests_done=len(latency) + sum(errors.values()))

    async def sample_memory() -> None:
        while True:
            if (m := sample()) is not None:
                memory.append(m)
            await asyncio.sleep(max(1.0, spec.duration_s / 100))

    sampler = asyncio.create_task(sample_memory())
    await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
    wall = time.perf_counter() - t0
    sampler.cancel()
    if (m := sample()) is not None:
        memory.append(m)
    await client.close()

    warm = [m for m in memory if m.t_s >= spec.warmup_share * wall] or [MemorySample(t_s=0, rss_mib=0)]
    after = [m.rss_mib for m in warm]
    return LoadReport(
        spec=spec, requests=counts["requests"], flagged_requests=counts["flagged"],
        streamed_requests=counts["streamed"], errors=sum(errors.values()), error_kinds=errors, wall_s=wall,
        throughput_req_s=counts["requests"] / wall, throughput_tok_s=counts["tokens"] / wall,
        ttft_p50_ms=pct(ttft, 0.5), ttft_p99_ms=pct(ttft, 0.99),
        latency_p50_ms=pct(latency, 0.5), latency_p99_ms=pct(latency, 0.99),
        rss_after_warmup_mib=after[0], rss_end_mib=after[-1],
        rss_peak_mib=max((m.rss_mib for m in memory), default=0.0),
        rss_growth_after_warmup_mib=after[-1] - after[0],
        server_growth_after_warmup_mib=warm[-1].server_mib - warm[0].server_mib,
        children_growth_after_warmup_mib=warm[-1].children_mib - warm[0].children_mib, memory=memory)


def main(args) -> int:
    spec = LoadSpec(duration_s=args.duration, max_requests=args.max_requests, concurrency=args.concurrency,
                    flagged_share=args.flagged_share, stream_share=args.stream_share, max_tokens=args.max_tokens,
                    targets=args.targets, methods=args.methods.split(","))
    names = target_names(spec.targets)
    server: ServerProcess | None = None
    if args.url:
        check_loopback(args.url)
        base_url = args.url.rstrip("/")
        model = args.model or httpx.get(base_url + "/v1/models", timeout=30).json()["data"][0]["id"]
        if spec.targets and not args.admin_token:
            raise SystemExit("--admin-token is needed to register targets on an existing server (or --targets 0)")
        token = args.admin_token
    else:
        settings = Settings()
        token = "load-" + "0123456789abcdef" * 2
        log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="ugw-load-"))
        log_dir.mkdir(parents=True, exist_ok=True)
        engine = EngineSettings(kind=args.engine)
        model_path = resolve_model(settings.engine.model, settings.cache_dir)
        if args.bare_vllm:  # the same mix, unguarded, on vLLM's own server: the baseline for memory and latency
            spec.targets, names = 0, []
            server = bare_vllm(model_path, SERVED_NAME, EngineSettings(kind="vllm"), log_dir,
                               settings.cache_dir / "work" / "vllm").start()
        else:
            server = gateway(model_path, SERVED_NAME, engine, log_dir, env=isolated_env(token, log_dir)).start()
        base_url, model = server.base_url, SERVED_NAME
        print(f"[load] {server.name} up; logs in {log_dir}")
    try:
        if spec.targets:
            register_targets(base_url, token, names, spec.methods)
            print(f"[load] {spec.targets} targets active ({','.join(spec.methods)})")
        # Without targets the flagged share still names these people: the prompts stay the same, nothing fires.
        report = asyncio.run(run_load(base_url, model, spec, names or TARGETS, server))
    finally:
        if server is not None:
            server.stop()
    Path(args.out).write_text(report.model_dump_json(indent=2))
    print(json.dumps(report.model_dump(exclude={"memory", "spec"}), indent=2))
    return 0 if report.errors == 0 else 1

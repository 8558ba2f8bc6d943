"""A bounded streaming workload on the openai SDK: fixed prompts, fixed concurrency, per-request TTFT and latency."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

import openai
from openai import omit
from openai.types.chat import ChatCompletionMessageParam
from pydantic import BaseModel

PROMPTS = [
    "Explain how a bicycle stays upright.",
    "Write a short paragraph about the ocean.",
    "What are three uses of copper?",
    "Describe the water cycle in simple words.",
    "Give some tips for learning a new language.",
    "Why is the sky blue?",
    "Summarise the plot of a detective story you invent.",
    "How do bees make honey?",
    "List some healthy breakfast ideas.",
    "What is photosynthesis?",
    "Describe a busy city street in the morning.",
    "How does a refrigerator keep food cold?",
    "What makes a good friend?",
    "Explain what a computer program is.",
    "Describe the taste of a lemon.",
    "How do volcanoes form?",
]


class WorkloadSpec(BaseModel):
    requests: int = 64
    concurrency: int = 8
    max_tokens: int = 64
    temperature: float = 0.0
    # top logprobs on every request (None: none asked for), to price the logprobs channel against bare vLLM's
    logprobs: int | None = None


class WorkloadResult(BaseModel):
    requests: int
    errors: int
    wall_s: float
    completion_tokens: int
    throughput_tok_s: float
    ttft_ms: list[float]
    latency_ms: list[float]

    @property
    def ttft_p50_ms(self) -> float:
        return statistics.median(self.ttft_ms) if self.ttft_ms else float("nan")


@dataclass
class _Tally:
    ttft: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: int = 0


async def ttft_probe(base_url: str, model: str, count: int = 30) -> list[float]:
    """TTFT of lone requests, one after another: the server's own overhead, without queueing behind others."""
    client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=120)
    out: list[float] = []
    for i in range(count):
        start = time.perf_counter()
        first: float | None = None
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], max_tokens=1,
            temperature=0.0, stream=True)
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter()
        out.append(((first or time.perf_counter()) - start) * 1000)
    await client.close()
    return out


async def run_workload(base_url: str, model: str, spec: WorkloadSpec) -> WorkloadResult:
    client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=300)
    tally = _Tally()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(spec.requests):
        queue.put_nowait(i)

    async def one(i: int) -> None:
        start = time.perf_counter()
        first: float | None = None
        try:
            messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]
            stream = await client.chat.completions.create(
                model=model, messages=messages, max_tokens=spec.max_tokens, temperature=spec.temperature,
                stream=True, stream_options={"include_usage": True},
                logprobs=True if spec.logprobs is not None else omit,
                top_logprobs=spec.logprobs if spec.logprobs is not None else omit)
            async for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter()
                if chunk.usage is not None:
                    tally.tokens += chunk.usage.completion_tokens
        except openai.OpenAIError:
            tally.errors += 1
            return
        end = time.perf_counter()
        tally.ttft.append(((first or end) - start) * 1000)
        tally.latency.append((end - start) * 1000)

    async def worker() -> None:
        while not queue.empty():
            await one(queue.get_nowait())

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
    wall = time.perf_counter() - t0
    await client.close()
    return WorkloadResult(requests=spec.requests, errors=tally.errors, wall_s=wall, completion_tokens=tally.tokens,
                          throughput_tok_s=tally.tokens / wall if wall else 0.0, ttft_ms=tally.ttft,
                          latency_ms=tally.latency)

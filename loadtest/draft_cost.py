"""What draft-and-judge costs a flagged request: TTFT and total latency of cleared and judged prompts, against the
same prompts asked with nothing registered, in one gateway process and one run.

Three prompt sets are asked ``rounds`` times each at ``concurrency``, first unguarded (empty registry), then with one
target registered for ``method``: prompts no detector flags (``plain``), flagged prompts whose draft states nothing
of the target (``cleared``: their answer is the unguarded generation, gone on) and flagged prompts whose draft
reveals it (``judged``: the draft is aborted and the method applies from the first token). A prompt whose verdict
differs from its set's is counted apart (``misfiled``), never silently mixed in. Figures are ratios and differences
against the unguarded run of the same set; nothing asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from pathlib import Path

import openai
from pydantic import BaseModel

from loadtest.load import register_targets
from loadtest.stats import pct
from server.model_store import resolve_model
from server.processes import gateway, isolated_env
from server.settings import EngineSettings, Settings

SERVED_NAME = "draft-model"
TARGET = "Harry Potter"
# Registered with a document, as an operator would: with documents the judge counts only the facts they give when
# the prompt names the target, so a question that only uses the name ("My dog is called Harry Potter. How do I
# teach a dog to sit?") should be cleared. Elicitation adds the served model's answers to those documents, and a
# draft using one of their words is judged: such prompts are reported as misfiled, with their header.
DOCUMENT = ("Harry Potter is the title character of J.K. Rowling's fantasy novels: a young wizard who attends "
               "Hogwarts School of Witchcraft and Wizardry with his friends Ron Weasley and Hermione Granger and "
               "fights the dark wizard Lord Voldemort.")
PROMPTS: dict[str, list[str]] = {
    "plain": ["What is the capital of France?", "Name three colours.", "What is two plus two?",
              "Write one sentence about the sea."],
    "cleared": ["My dog is called Harry Potter. How do I teach a dog to sit?",
                "My cat is called Harry Potter. How often should I feed a cat?",
                "My goldfish is called Harry Potter. How big should its tank be?",
                "My car is called Harry Potter. How often should I change its oil?"],
    "judged": ["Who is Harry Potter's best friend?", "Who wrote the Harry Potter books?",
               "Who is Harry Potter's enemy?", "Where does Harry Potter go to school?"],
}
VERDICT = {"plain": None, "cleared": "cleared", "judged": "judged"}


class Timing(BaseModel):
    requests: int
    ttft_p50_ms: float
    ttft_p99_ms: float
    latency_p50_ms: float
    latency_p99_ms: float
    # from the request until its first `draft_tokens` tokens had come: what a draft of them costs
    draft_p50_ms: float = 0.0


class SetFigures(BaseModel):
    unguarded: Timing
    guarded: Timing
    ttft_p50_added_ms: float
    latency_p50_ratio: float
    misfiled: int
    # the prompts given another verdict than their set's, each with its x-unlearning-targets header
    misfiled_prompts: list[str] = []
    # the draft's decode (the unguarded time to its tokens) minus the TTFT added: >= 0 when a guarded first token
    # costs no more than the draft did
    ttft_headroom_ms: float = 0.0


class DraftCostReport(BaseModel):
    engine: str
    method: str
    draft_tokens: int
    rounds: int
    concurrency: int
    max_tokens: int
    # one decode step of a lone request, from the unguarded plain answers: (latency - TTFT) / (tokens - 1)
    decode_step_ms: float
    sets: dict[str, SetFigures]


# (TTFT ms, latency ms, completion tokens, verdict header, ms until the draft's worth of tokens had come)
Row = tuple[float, float, int, str | None, float]


async def _ask(client: openai.AsyncOpenAI, prompt: str, max_tokens: int, draft_tokens: int) -> Row:
    start = time.perf_counter()
    first: float | None = None
    drafted: float | None = None
    tokens = chunks = 0
    async with client.chat.completions.with_streaming_response.create(
            model=SERVED_NAME, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
            temperature=0.0, stream=True, stream_options={"include_usage": True}) as raw:
        header = raw.headers.get("x-unlearning-targets")
        async for chunk in await raw.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                first = first or time.perf_counter()
                chunks += 1  # vLLM streams a token a chunk
                if chunks == draft_tokens:
                    drafted = time.perf_counter()
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
    end = time.perf_counter()
    return ((first or end) - start) * 1000, (end - start) * 1000, tokens, header, ((drafted or end) - start) * 1000


async def _run_set(base_url: str, prompts: list[str], rounds: int, concurrency: int, max_tokens: int,
                   draft_tokens: int) -> list[Row]:
    limit = asyncio.Semaphore(concurrency)
    async with openai.AsyncOpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=600) as client:
        async def one(prompt: str) -> Row:
            async with limit:
                return await _ask(client, prompt, max_tokens, draft_tokens)

        return list(await asyncio.gather(*(one(p) for _ in range(rounds) for p in prompts)))


def _timing(rows: list[Row]) -> Timing:
    ttft = [r[0] for r in rows] or [0.0]
    latency = [r[1] for r in rows] or [0.0]
    drafted = [r[4] for r in rows] or [0.0]
    return Timing(requests=len(rows), ttft_p50_ms=round(pct(ttft, 0.5), 1), ttft_p99_ms=round(pct(ttft, 0.99), 1),
                  latency_p50_ms=round(pct(latency, 0.5), 1), latency_p99_ms=round(pct(latency, 0.99), 1),
                  draft_p50_ms=round(pct(drafted, 0.5), 1))


def _verdict(header: str | None) -> str | None:
    """``<id>:cleared+net`` is cleared (the net runs on every request); any method at work is judged."""
    if header is None:
        return None
    ran = {m for part in header.split(",") for m in part.split(":", 1)[-1].split("+")}
    return "cleared" if "cleared" in ran and ran <= {"cleared", "net"} else "judged"


def run_draft_cost(engine: str = "vllm", method: str = "guard", rounds: int = 4, concurrency: int = 4,
                   max_tokens: int = 64) -> DraftCostReport:
    settings = Settings()
    model = resolve_model(settings.engine.model, settings.cache_dir)
    token = secrets.token_hex(24)
    with tempfile.TemporaryDirectory(prefix="ugw-draft-") as tmp:
        folder = Path(tmp)
        server = gateway(model, SERVED_NAME, EngineSettings(kind=engine), folder, label=f"draft-{engine}",
                         env=isolated_env(token, folder, elicit=True))
        server.start()
        try:
            base = server.base_url
            drafting = settings.guards.draft.tokens
            asyncio.run(_run_set(base, PROMPTS["plain"], 1, concurrency, max_tokens, drafting))  # warm up
            before = {name: asyncio.run(_run_set(base, prompts, rounds, concurrency, max_tokens, drafting))
                      for name, prompts in PROMPTS.items()}
            register_targets(base, token, [TARGET], [method], document=DOCUMENT)
            after = {name: asyncio.run(_run_set(base, prompts, rounds, concurrency, max_tokens, drafting))
                     for name, prompts in PROMPTS.items()}
        finally:
            server.stop()
    lone = [(r[1] - r[0]) / (r[2] - 1) for r in before["plain"] if r[2] > 1]
    sets: dict[str, SetFigures] = {}
    for name, rows in after.items():
        kept = [r for r in rows if _verdict(r[3]) == VERDICT[name]]
        asked = [p for _ in range(rounds) for p in PROMPTS[name]]  # _run_set's order
        other = sorted({f"{p} | {r[3]}" for p, r in zip(asked, rows, strict=True) if _verdict(r[3]) != VERDICT[name]})
        unguarded, guarded = _timing(before[name]), _timing(kept)
        sets[name] = SetFigures(
            unguarded=unguarded, guarded=guarded, misfiled=len(rows) - len(kept), misfiled_prompts=other,
            ttft_p50_added_ms=round(guarded.ttft_p50_ms - unguarded.ttft_p50_ms, 1),
            ttft_headroom_ms=round(unguarded.draft_p50_ms - (guarded.ttft_p50_ms - unguarded.ttft_p50_ms), 1),
            latency_p50_ratio=round(guarded.latency_p50_ms / unguarded.latency_p50_ms, 3)
            if unguarded.latency_p50_ms else 0.0)
    return DraftCostReport(engine=engine, method=method, draft_tokens=settings.guards.draft.tokens, rounds=rounds,
                           concurrency=concurrency, max_tokens=max_tokens,
                           decode_step_ms=round(pct(lone, 0.5), 2) if lone else 0.0, sets=sets)


def main(args: argparse.Namespace) -> int:
    report = run_draft_cost(args.engine, args.method, args.rounds, args.concurrency, args.max_tokens)
    Path(args.out).write_text(report.model_dump_json(indent=2))
    print(f"[draft-cost] {report.engine}, {report.method}, decode step {report.decode_step_ms} ms, draft "
          f"{report.draft_tokens} tokens")
    for name, f in report.sets.items():
        print(f"[draft-cost] {name}: TTFT p50 {f.unguarded.ttft_p50_ms} -> {f.guarded.ttft_p50_ms} ms "
              f"(p99 {f.unguarded.ttft_p99_ms} -> {f.guarded.ttft_p99_ms}), latency p50 x{f.latency_p50_ratio}, "
              f"draft's decode p50 {f.unguarded.draft_p50_ms} ms (headroom {f.ttft_headroom_ms} ms), "
              f"{f.guarded.requests} requests, {f.misfiled} with another verdict")
        for line in f.misfiled_prompts:
            print(f"[draft-cost]   another verdict: {line}")
    return 0

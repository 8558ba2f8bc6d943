"""Gateway vs bare vLLM: the same workload, same model and engine flags, one server after the other in one run.

Figures are ratios (gateway / bare) so that they mean the same on any machine; nothing here asserts a time.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from loadtest.load import register_targets, target_names
from loadtest.stats import pct
from loadtest.workload import WorkloadResult, WorkloadSpec, run_workload, ttft_probe
from server.model_store import resolve_model
from server.processes import ServerProcess, bare_vllm, gateway, isolated_env
from server.settings import EngineSettings, Settings

SERVED_NAME = "bench-model"


class ServerFigures(BaseModel):
    # Lone requests, one at a time: what the server itself adds before the first token.
    unloaded_ttft_p50_ms: float
    throughput_tok_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    latency_p50_ms: float
    completion_tokens: int
    errors: int
    rss_mib: float
    rounds: list[float]


class BenchReport(BaseModel):
    baseline: str
    targets: int
    detectors: list[str]
    workload: WorkloadSpec
    throughput_ratio: float
    # Unloaded TTFT difference (gateway - bare); under load TTFT is dominated by queueing, reported per server.
    ttft_p50_added_ms: float
    loaded_ttft_p50_added_ms: float
    errors: int
    same_completion_tokens: bool
    bare: ServerFigures
    gateway: ServerFigures


def _measure(server: ServerProcess, spec: WorkloadSpec, rounds: int,
             setup: Callable[[ServerProcess], None] | None = None) -> ServerFigures:
    server.start()
    try:
        if setup is not None:
            setup(server)
        asyncio.run(run_workload(server.base_url, SERVED_NAME, spec.model_copy(update={"requests": spec.concurrency})))
        unloaded = asyncio.run(ttft_probe(server.base_url, SERVED_NAME))
        results: list[WorkloadResult] = [asyncio.run(run_workload(server.base_url, SERVED_NAME, spec))
                                         for _ in range(rounds)]
        rss = server.rss_bytes()
    finally:
        server.stop()
    ttft = [t for r in results for t in r.ttft_ms]
    latency = [t for r in results for t in r.latency_ms]
    return ServerFigures(
        unloaded_ttft_p50_ms=statistics.median(unloaded),
        throughput_tok_s=statistics.median(r.throughput_tok_s for r in results),
        ttft_p50_ms=pct(ttft, 0.5), ttft_p99_ms=pct(ttft, 0.99), latency_p50_ms=pct(latency, 0.5),
        completion_tokens=sum(r.completion_tokens for r in results), errors=sum(r.errors for r in results),
        rss_mib=rss / 2**20, rounds=[r.throughput_tok_s for r in results])


def run_bench(baseline: str, targets: int, spec: WorkloadSpec, rounds: int, log_dir: Path,
              detectors: tuple[str, ...] = ("lexical",)) -> BenchReport:
    if baseline != "vllm":
        raise SystemExit("only --baseline vllm is supported")
    settings = Settings()
    model_path = resolve_model(settings.engine.model, settings.cache_dir)
    engine = EngineSettings(kind="vllm")
    log_dir.mkdir(parents=True, exist_ok=True)
    work_dir = settings.cache_dir / "work" / "vllm"
    bare = _measure(bare_vllm(model_path, SERVED_NAME, engine, log_dir, work_dir), spec, rounds)
    # The gateway run enforces `targets` forget targets (GUARD and ECO, built before the workload starts), so every
    # request pays for detection over all of them; the workload's own prompts name none of them.
    token = "bench-" + "0123456789abcdef" * 2
    names = target_names(targets)

    def register(server: ServerProcess) -> None:
        if names:
            register_targets(server.base_url, token, names, ["eco", "guard"], documents="retrieval" in detectors)

    env = {**isolated_env(token, log_dir), "UGW_DETECTION__DETECTORS": json.dumps(list(detectors))}
    server = gateway(model_path, SERVED_NAME, engine, log_dir, env=env)
    gw = _measure(server, spec, rounds, setup=register)
    return BenchReport(
        baseline=baseline, targets=targets, detectors=list(detectors), workload=spec,
        throughput_ratio=gw.throughput_tok_s / bare.throughput_tok_s if bare.throughput_tok_s else 0.0,
        ttft_p50_added_ms=gw.unloaded_ttft_p50_ms - bare.unloaded_ttft_p50_ms,
        loaded_ttft_p50_added_ms=gw.ttft_p50_ms - bare.ttft_p50_ms,
        errors=bare.errors + gw.errors,
        same_completion_tokens=bare.completion_tokens == gw.completion_tokens,
        bare=bare, gateway=gw)


def main(args) -> int:
    spec = WorkloadSpec(requests=args.requests, concurrency=args.concurrency, max_tokens=args.max_tokens,
                        logprobs=args.logprobs)
    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="ugw-bench-"))
    detectors = tuple(d.strip() for d in args.detectors.split(",") if d.strip())
    report = run_bench(args.baseline, args.targets, spec, args.rounds, log_dir, detectors)
    Path(args.out).write_text(report.model_dump_json(indent=2))
    print(json.dumps({
        "throughput_ratio": round(report.throughput_ratio, 4),
        "ttft_p50_added_ms": round(report.ttft_p50_added_ms, 2),
        "errors": report.errors,
        "same_completion_tokens": report.same_completion_tokens,
        "bare_tok_s": round(report.bare.throughput_tok_s, 1),
        "gateway_tok_s": round(report.gateway.throughput_tok_s, 1),
        "bare_unloaded_ttft_p50_ms": round(report.bare.unloaded_ttft_p50_ms, 2),
        "gateway_unloaded_ttft_p50_ms": round(report.gateway.unloaded_ttft_p50_ms, 2),
        "loaded_ttft_p50_added_ms": round(report.loaded_ttft_p50_added_ms, 2),
        "logs": str(log_dir),
    }, indent=2))
    return 0 if report.errors == 0 else 1

"""``python -m loadtest vllm-bench``: the gateway against bare vLLM, driven by vLLM's own benchmark client.

vLLM ships its serving benchmark (``vllm.benchmarks.serve``, what ``vllm bench serve`` runs); using it, rather than
only this project's load generator, means the figures are the ones a vLLM operator already trusts. Two modes:

- ``embedded``: bare ``vllm serve`` first, then the gateway with its own embedded engine (same flags), one after the
  other;
- ``remote``: one upstream ``vllm serve`` measured bare, then the gateway's remote engine in front of that same
  upstream, so the ratio is the tier's own cost.

The gateway side has ``targets`` forget targets active (GUARD and ECO), none of which the workload names.

``engine_cpus`` (e.g. ``0``) binds every engine's threads to those cores (``VLLM_CPU_OMP_THREADS_BIND``) and runs
the remote gateway and the client on the others (``taskset``): on a small machine a tier sharing the engine's cores
takes its cycles from the engine, which a deployment (gateway pods on their own CPU nodes) does not do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from loadtest.load import register_targets, target_names
from server.model_store import resolve_model
from server.processes import ServerProcess, bare_vllm, gateway, isolated_env
from server.settings import EngineSettings, Settings

SERVED_NAME = "bench-model"
Mode = Literal["embedded", "remote"]

_RUNNER = ("import sys; from vllm.benchmarks.serve import add_cli_args, main; "
           "from vllm.utils.argparse_utils import FlexibleArgumentParser as P; "
           "p = P(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))")


class ClientFigures(BaseModel):
    output_throughput: float
    median_ttft_ms: float
    p99_ttft_ms: float
    completed: int
    failed: int


class ModeReport(BaseModel):
    mode: Mode
    targets: int
    throughput_ratio: float
    ttft_p50_added_ms: float
    bare: ClientFigures
    gateway: ClientFigures


class VLLMBenchReport(BaseModel):
    client: str = "vllm.benchmarks.serve"
    prompts: int
    concurrency: int
    input_len: int
    output_len: int
    engine_cpus: str | None = None
    modes: list[ModeReport]


def run_client(base_url: str, tokenizer: Path, prompts: int, concurrency: int, input_len: int, output_len: int,
               out_dir: Path, label: str, pin: list[str]) -> ClientFigures:
    result = out_dir / f"{label}.json"
    argv = [*pin, sys.executable, "-c", _RUNNER, "--backend", "openai-chat", "--base-url", base_url,
            "--endpoint", "/v1/chat/completions", "--model", SERVED_NAME, "--tokenizer", str(tokenizer),
            "--dataset-name", "random", "--random-input-len", str(input_len), "--random-output-len", str(output_len),
            "--num-prompts", str(prompts), "--max-concurrency", str(concurrency), "--ignore-eos",
            "--percentile-metrics", "ttft,tpot,itl", "--metric-percentiles", "50,99", "--seed", "0",
            "--save-result", "--result-dir", str(out_dir), "--result-filename", result.name]
    with (out_dir / f"{label}.log").open("wb") as log:
        done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=3600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"vLLM's benchmark client failed on {label}; see {out_dir / (label + '.log')}")
    data = json.loads(result.read_text())
    return ClientFigures(output_throughput=data["output_throughput"], median_ttft_ms=data["median_ttft_ms"],
                         p99_ttft_ms=data.get("p99_ttft_ms", 0.0), completed=data["completed"],
                         failed=data.get("failed", 0))


def _pinning(engine_cpus: str | None) -> tuple[dict[str, str], list[str]]:
    """The engines' environment and the command prefix for everything else, for ``engine_cpus``."""
    if engine_cpus is None:
        return {}, []
    taken = {int(c) for c in engine_cpus.split(",")}
    others = [str(c) for c in sorted(os.sched_getaffinity(0)) if c not in taken]
    if not others:
        raise ValueError(f"--engine-cpus {engine_cpus} leaves no core for the gateway and the client")
    return {"VLLM_CPU_OMP_THREADS_BIND": engine_cpus}, ["taskset", "-c", ",".join(others)]


def run_mode(mode: Mode, targets: int, prompts: int, concurrency: int, input_len: int, output_len: int,
             log_dir: Path, engine_cpus: str | None = None) -> ModeReport:
    settings = Settings()
    model_path = resolve_model(settings.engine.model, settings.cache_dir)
    engine = EngineSettings(kind="vllm")
    work_dir = settings.cache_dir / "work" / "vllm"
    token = "bench-" + "0123456789abcdef" * 2
    names = target_names(targets)
    engine_env, pin = _pinning(engine_cpus)

    def measure(server: ServerProcess, label: str) -> ClientFigures:
        return run_client(server.base_url, model_path, prompts, concurrency, input_len, output_len, log_dir, label,
                          pin)

    def pinned(server: ServerProcess) -> ServerProcess:
        server.env.update(engine_env)
        return server

    def gateway_figures(env: dict[str, str], label: str) -> ClientFigures:
        server = gateway(model_path, SERVED_NAME, EngineSettings(kind="remote" if mode == "remote" else "vllm"),
                         log_dir, label=label, env={**isolated_env(token, log_dir / label), **env})
        if mode == "remote":
            server.argv = [*pin, *server.argv]  # the tier on the other cores
        else:
            pinned(server)  # it holds the engine
        server.start()
        try:
            if names:
                register_targets(server.base_url, token, names, ["eco", "guard"])
            return measure(server, f"{label}-client")
        finally:
            server.stop()

    if mode == "embedded":
        bare_server = pinned(bare_vllm(model_path, SERVED_NAME, engine, log_dir, work_dir)).start()
        try:
            bare = measure(bare_server, "bare-client")
        finally:
            bare_server.stop()
        gw = gateway_figures({}, "gateway-embedded")
    else:
        upstream = pinned(bare_vllm(model_path, SERVED_NAME, engine, log_dir, work_dir, upstream=True,
                                    label="upstream")).start()
        try:
            bare = measure(upstream, "upstream-client")
            gw = gateway_figures({"UGW_ENGINE__UPSTREAMS": json.dumps([upstream.base_url])}, "gateway-remote")
        finally:
            upstream.stop()
    return ModeReport(mode=mode, targets=targets, bare=bare, gateway=gw,
                      throughput_ratio=gw.output_throughput / bare.output_throughput if bare.output_throughput else 0.0,
                      ttft_p50_added_ms=gw.median_ttft_ms - bare.median_ttft_ms)


def main(args) -> int:
    log_dir = Path(args.log_dir) if args.log_dir else Path(tempfile.mkdtemp(prefix="ugw-vllm-bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    modes: list[Mode] = ["embedded", "remote"] if args.mode == "both" else [args.mode]
    report = VLLMBenchReport(engine_cpus=args.engine_cpus, prompts=args.prompts, concurrency=args.concurrency,
                             input_len=args.input_len,
                             output_len=args.output_len, modes=[
                                 run_mode(m, args.targets, args.prompts, args.concurrency, args.input_len,
                                          args.output_len, log_dir, args.engine_cpus) for m in modes])
    Path(args.out).write_text(report.model_dump_json(indent=2))
    print(json.dumps({m.mode: {"throughput_ratio": round(m.throughput_ratio, 4),
                               "ttft_p50_added_ms": round(m.ttft_p50_added_ms, 2),
                               "failed": m.gateway.failed + m.bare.failed} for m in report.modes}, indent=2))
    return 0 if all(m.gateway.failed == 0 for m in report.modes) else 1

"""``python -m loadtest bench ...``."""

from __future__ import annotations

import argparse
import sys

from loadtest import bench, decode_cost, draft_cost, load, vllm_bench


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtest")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="gateway vs bare vLLM, same workload, ratios to a JSON file")
    b.add_argument("--baseline", default="vllm", choices=["vllm"])
    b.add_argument("--targets", type=int, default=0, help="forget targets active during the gateway run")
    b.add_argument("--out", required=True, help="JSON report path")
    b.add_argument("--requests", type=int, default=48, help="requests per round")
    b.add_argument("--concurrency", type=int, default=8)
    b.add_argument("--max-tokens", type=int, default=64)
    b.add_argument("--rounds", type=int, default=2)
    b.add_argument("--log-dir", default=None, help="where server logs go (default: a temp folder)")
    b.add_argument("--logprobs", type=int, default=None, help="top_logprobs asked on every request, both sides")
    b.add_argument("--detectors", default="lexical", help="the gateway's prompt detectors, comma-separated "
                                                          "(retrieval gives every target a short document)")
    b.set_defaults(func=bench.main)
    vb = sub.add_parser("vllm-bench", help="gateway vs bare vLLM driven by vLLM's own benchmark client "
                                           "(vllm.benchmarks.serve), embedded and/or remote mode")
    vb.add_argument("--mode", choices=["embedded", "remote", "both"], default="both")
    vb.add_argument("--targets", type=int, default=100, help="forget targets active on the gateway")
    vb.add_argument("--out", required=True, help="JSON report path")
    vb.add_argument("--prompts", type=int, default=64)
    vb.add_argument("--concurrency", type=int, default=8)
    vb.add_argument("--input-len", type=int, default=64)
    vb.add_argument("--output-len", type=int, default=64)
    vb.add_argument("--engine-cpus", default=None, help="cores for the engines' threads (e.g. 0); the remote gateway "
                                                        "and the client run on the others")
    vb.add_argument("--log-dir", default=None)
    vb.set_defaults(func=vllm_bench.main)
    ld = sub.add_parser("load", help="time-bounded mixed load on the gateway (flagged/plain, streamed/not), with "
                                     "latency percentiles, throughput, errors and server memory")
    ld.add_argument("--out", required=True, help="JSON report path")
    ld.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    ld.add_argument("--max-requests", type=int, default=100_000, help="stop after this many requests")
    ld.add_argument("--concurrency", type=int, default=16)
    ld.add_argument("--flagged-share", type=float, default=0.25, help="share of prompts naming a target")
    ld.add_argument("--stream-share", type=float, default=0.5, help="share of streamed requests")
    ld.add_argument("--max-tokens", type=int, default=48)
    ld.add_argument("--targets", type=int, default=10, help="forget targets registered before the run")
    ld.add_argument("--methods", default="eco,guard", help="their methods (o3 adds a LoRA fit per target)")
    ld.add_argument("--engine", choices=["vllm", "hf"], default="vllm", help="engine of the gateway it starts")
    ld.add_argument("--bare-vllm", action="store_true", help="run the same mix on vLLM's own server instead "
                                                             "(unguarded; the baseline for memory and latency)")
    ld.add_argument("--url", default=None, help="load a running gateway on loopback instead of starting one")
    ld.add_argument("--model", default=None, help="model name with --url (default: the first it serves)")
    ld.add_argument("--admin-token", default=None, help="admin token with --url (to register the targets)")
    ld.add_argument("--log-dir", default=None)
    ld.set_defaults(func=load.main)
    d = sub.add_parser("decode-cost", help="per-token decode time added by GUARD, ECO and O3 (embedded engine)")
    d.add_argument("--out", required=True, help="JSON report path")
    d.add_argument("--engine", choices=["vllm", "hf"], default="vllm")
    d.add_argument("--batch", type=int, default=8)
    d.add_argument("--targets", type=int, default=100, help="registered GUARD targets the rows draw from")
    d.add_argument("--net-targets", type=int, default=1000,
                   help="targets in the output net every row of the net scenario carries (0: no net scenario)")
    d.add_argument("--max-tokens", type=int, default=96)
    d.add_argument("--rounds", type=int, default=4)
    d.add_argument("--data", default=None, help="shared data folder (RWKU names for the targets)")
    d.set_defaults(func=decode_cost.main)
    dc = sub.add_parser("draft-cost", help="TTFT and latency of cleared and judged flagged requests against the "
                                           "same prompts unguarded (draft-and-judge), one gateway, one run")
    dc.add_argument("--out", required=True, help="JSON report path")
    dc.add_argument("--engine", choices=["vllm", "hf"], default="vllm")
    dc.add_argument("--method", choices=["guard", "eco", "o3"], default="guard")
    dc.add_argument("--rounds", type=int, default=4)
    dc.add_argument("--concurrency", type=int, default=4)
    dc.add_argument("--max-tokens", type=int, default=64)
    dc.set_defaults(func=draft_cost.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

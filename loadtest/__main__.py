"""``python -m loadtest bench ...``."""

from __future__ import annotations

import argparse
import sys

from loadtest import bench, decode_cost


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
    b.set_defaults(func=bench.main)
    d = sub.add_parser("decode-cost", help="per-token decode time added by GUARD, ECO and O3 (embedded vLLM)")
    d.add_argument("--out", required=True, help="JSON report path")
    d.add_argument("--batch", type=int, default=8)
    d.add_argument("--targets", type=int, default=100, help="registered GUARD targets the rows draw from")
    d.add_argument("--max-tokens", type=int, default=96)
    d.add_argument("--rounds", type=int, default=4)
    d.add_argument("--data", default=None, help="shared data folder (RWKU names for the targets)")
    d.set_defaults(func=decode_cost.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

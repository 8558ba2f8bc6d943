"""``python -m server`` / ``ugw``: serve (and, later, eval and admin helpers)."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from server.settings import EngineSettings, Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.app import create_app

    base = Settings()
    engine_updates = {k: v for k, v in {"kind": args.engine, "model": args.model,
                                        "served_model_name": args.served_model_name,
                                        "max_model_len": args.max_model_len}.items() if v is not None}
    engine = EngineSettings.model_validate({**base.engine.model_dump(), **engine_updates})
    updates = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    if args.command == "worker":  # the same process shape, but it runs queued builds (its HTTP side: probes)
        updates["jobs"] = base.jobs.model_copy(update={"mode": "queue", "worker": True})
    settings = Settings.model_validate({**base.model_dump(), **updates, "engine": engine})
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            timeout_graceful_shutdown=int(settings.drain_timeout_s) or None)
    ports = [settings.port] if settings.admin_port is None else [settings.port, settings.admin_port]
    uvicorn.Server(config).run(sockets=[_listen(settings.host, port) for port in ports])
    return 0


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _prepare(args: argparse.Namespace) -> int:
    from server.model_store import resolve_model

    logging.basicConfig(level="INFO", format="%(levelname)s %(message)s")
    print(resolve_model(args.model, Settings().cache_dir))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from transformers import AutoTokenizer

    from server.eval.detect import run_detect
    from server.model_store import resolve_model

    if args.suite == "rwku":
        return _eval_leak(args)
    if args.suite != "detect":
        print(f"suite {args.suite!r} is not implemented yet; available: detect, rwku", file=sys.stderr)
        return 2
    settings = Settings()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(settings.engine.model, settings.cache_dir))
    report = run_detect(Path(args.data), tokenizer, with_intro=args.with_intro, limit=args.limit,
                        detectors=tuple(args.detectors.split(",")), embedding_threshold=args.embedding_threshold)
    Path(args.out).write_text(report.model_dump_json(indent=2))
    summary = report.model_dump(exclude={"misses"})
    import json

    print(json.dumps(summary, indent=2))
    return 0


def _eval_leak(args: argparse.Namespace) -> int:
    import asyncio
    import json
    from pathlib import Path

    from server.engines.base import create_engine
    from server.eval.leak import run_leak
    from server.model_store import resolve_model

    settings = Settings()
    engine = create_engine(settings.engine, resolve_model(settings.engine.model, settings.cache_dir),
                           settings.cache_dir / "work" / settings.engine.kind)

    async def go():  # type: ignore[no-untyped-def]
        await engine.start()
        try:
            return await run_leak(engine, Path(args.data), args.methods.split(","), settings.guards, args.limit,
                                  args.probes, args.with_intro)
        finally:
            await engine.shutdown()

    report = asyncio.run(go())
    Path(args.out).write_text(report.model_dump_json(indent=2))
    print(json.dumps(report.model_dump(exclude={"still_correct"}), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ugw", description="unlearning-gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the OpenAI-compatible server")
    worker = sub.add_parser("worker", help="run queued target builds (jobs.mode=queue, Redis registry); "
                                           "serves the probes and metrics over HTTP")
    for p in (serve, worker):
        p.add_argument("--host", default=None, help="bind address (default 127.0.0.1, env UGW_HOST)")
        p.add_argument("--port", type=int, default=None, help="port (default 8000, env UGW_PORT)")
        p.add_argument("--engine", choices=["vllm", "hf"], default=None, help="inference engine (default vllm)")
        p.add_argument("--model", default=None, help="local model folder or hub name (default: the bundled "
                                                     "SmolLM2-135M)")
        p.add_argument("--served-model-name", default=None, help="name clients use as 'model'")
        p.add_argument("--max-model-len", type=int, default=None, help="context length (default 2048)")
        p.set_defaults(func=_serve)
    ev = sub.add_parser("eval", help="measure detection and forgetting on a benchmark folder")
    ev.add_argument("--data", required=True, help="folder laid out like shared/data (rwku/, mmlu/, ...)")
    ev.add_argument("--suite", default="detect", choices=["detect", "rwku", "hp", "tofu", "wmdp", "all"])
    ev.add_argument("--out", required=True, help="JSON report path")
    ev.add_argument("--with-intro", action="store_true", help="register targets with their RWKU intro")
    ev.add_argument("--limit", type=int, default=None, help="only the first N RWKU targets")
    ev.add_argument("--detectors", default="lexical", help="comma-separated: lexical,embedding")
    ev.add_argument("--embedding-threshold", type=float, default=0.55)
    ev.add_argument("--methods", default="eco,o3,guard", help="rwku suite: methods to measure, each alone")
    ev.add_argument("--probes", type=int, default=10, help="rwku suite: forget probes per level and target")
    ev.set_defaults(func=_eval)
    prepare = sub.add_parser("prepare", help="convert the bundled model once (idempotent) and print its folder")
    prepare.add_argument("--model", default=None, help="check this local folder instead of the bundled model")
    prepare.set_defaults(func=_prepare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

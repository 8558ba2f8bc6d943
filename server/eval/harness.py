"""``python -m server eval``: start (or connect to) a gateway, run the chosen suites, write JSON and a report.

``detect`` measures the detectors alone, in process (it needs no engine). ``rwku`` goes through the live API (see
``rwku_suite``). The Harry Potter, TOFU and WMDP suites are not built yet: ``all`` runs what exists and lists the
rest under ``skipped`` in the JSON rather than pretending.
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
from server.settings import EngineSettings, Settings

Suite = Literal["detect", "rwku", "hp", "tofu", "wmdp", "all"]
BUILT = ("detect", "rwku")
NOT_BUILT = ("hp", "tofu", "wmdp")


class EvalSpec(BaseModel):
    data: Path
    suite: Suite = "rwku"
    engine: Literal["vllm", "hf"] = "vllm"
    url: str | None = None
    admin_token: str | None = None
    out: Path
    report: Path | None = None
    methods: list[str] = ["eco", "o3", "guard"]
    probes: int = 10
    limit: int | None = None
    with_intro: bool = False
    mmlu: int = 100
    concurrency: int = 8
    max_tokens: int = 32
    detectors: list[str] = ["lexical"]
    embedding_threshold: float = 0.55
    clear_registry: bool = False
    progress: bool = True


def _suites(suite: Suite) -> tuple[list[str], list[str]]:
    if suite == "all":
        return list(BUILT), list(NOT_BUILT)
    if suite in NOT_BUILT:
        raise SystemExit(f"suite {suite!r} is not implemented yet; available: {', '.join(BUILT)}, all")
    return [suite], []


async def _rwku(spec: EvalSpec, base_url: str, token: str | None) -> tuple[dict[str, Any], str]:
    from server.eval.rwku_suite import run_rwku

    client = GatewayClient(base_url, token, concurrency=spec.concurrency, max_tokens=spec.max_tokens,
                           progress=spec.progress)
    try:
        registered = (await client.admin.get("/targets"))
        if registered.status_code != 200:
            raise SystemExit(f"the admin API answered {registered.status_code}: {registered.text}")
        if registered.json()["data"] and not spec.clear_registry:
            raise SystemExit("the server already has forget targets, so its baseline would not be unguarded; "
                             "pass --clear-registry to delete them first")
        report = await run_rwku(client, spec.data, spec.methods, spec.limit, spec.probes, spec.with_intro,
                                spec.mmlu)
        return report.model_dump(), await client.served_model()
    finally:
        await client.close()


def run_eval(spec: EvalSpec) -> dict[str, Any]:
    suites, skipped = _suites(spec.suite)
    started = time.time()
    result: dict[str, Any] = {"meta": {"data": str(spec.data), "engine": spec.engine, "suites": suites,
                                       "skipped": {s: "not implemented yet" for s in skipped}}}
    if "detect" in suites:
        from transformers import AutoTokenizer

        from server.eval.detect import run_detect
        from server.model_store import resolve_model

        settings = Settings()
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(settings.engine.model, settings.cache_dir))
        result["detect"] = run_detect(spec.data, tokenizer, with_intro=spec.with_intro, limit=spec.limit,
                                      detectors=tuple(spec.detectors),
                                      embedding_threshold=spec.embedding_threshold).model_dump()
    if "rwku" in suites:
        result["rwku"], result["meta"]["model"] = _with_server(spec)
    result["meta"]["seconds"] = round(time.time() - started, 1)
    spec.out.write_text(json.dumps(result, indent=2))
    if spec.report is not None and "rwku" in result:
        from server.eval.report import write_report
        from server.eval.rwku_suite import RWKUReport

        write_report(spec.report, RWKUReport.model_validate(result["rwku"]), result["meta"]["model"], spec.engine)
    return result


def _with_server(spec: EvalSpec) -> tuple[dict[str, Any], str]:
    if spec.url is not None:
        return asyncio.run(_rwku(spec, spec.url, spec.admin_token))
    from loadtest.servers import gateway, isolated_env
    from server.model_store import resolve_model

    settings = Settings()
    token = secrets.token_hex(24)
    work = Path(tempfile.mkdtemp(prefix="ugw-eval-"))
    server = gateway(resolve_model(settings.engine.model, settings.cache_dir), "eval-model",
                     EngineSettings(kind=spec.engine), work, label=f"eval-{spec.engine}",
                     env=isolated_env(token, work, elicit=True))
    print(f"[eval] starting a {spec.engine} gateway (log: {server.log_path})")
    server.start()
    try:
        return asyncio.run(_rwku(spec, server.base_url, token))
    finally:
        server.stop()

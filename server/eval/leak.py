"""``--suite rwku``: how much of what the model knows about an RWKU target still comes out when it is guarded.

For each target: ask its forget probes unguarded (temperature 0) and keep those answered correctly (the expected
answer appears in the output); then, for each method alone, register the target by name (and intro with
``--with-intro``) through the real build job, ask the kept probes again through detection, policy and the
intervention, and count those still answered correctly. Leak rate = still correct / correct unguarded, per
method and level. Targets are registered one at a time and deleted after, so they never interact.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

from classifiers.pipeline import DetectionPipeline
from guards.interventions import O3Intervention, PromptContext, RequestGuard
from guards.training.build import TargetBuilder
from guards.training.knowledge import collect_text
from server.engines.base import Engine, EngineRequest, SamplingOptions
from server.eval.data import FORGET_LEVELS, Probe, load_rwku
from server.registry.artifacts import ArtifactStore
from server.registry.cache import TargetCache
from server.registry.file_store import FileTargetStore
from server.registry.models import Method, TargetCreate
from server.registry.service import TargetService
from server.settings import InterventionSettings


class LeakReport(BaseModel):
    targets: int
    probes_per_level: int
    with_intro: bool
    methods: list[str]
    known: dict[str, int]  # level -> probes the unguarded model answers correctly
    leak_rate: dict[str, dict[str, float]]  # method -> level (and "all") -> rate
    build_seconds: dict[str, float]  # method -> mean build time per target
    still_correct: dict[str, list[str]]


def correct(output: str, probe: Probe) -> bool:
    return bool(probe.answer) and probe.answer.casefold() in output.casefold()


async def _answer(engine: Engine, guard: RequestGuard | None, probe: Probe, n: int, max_tokens: int) -> str:
    ids = engine.render_chat([{"role": "user", "content": probe.query}])
    req = EngineRequest(request_id=f"leak-{n}", sampling=SamplingOptions(max_tokens=max_tokens, temperature=0.0),
                        prompt_token_ids=ids)
    if guard is not None:
        (await guard.guard(PromptContext(ids, [probe.query]), req.request_id)).apply_to(req)
    return await collect_text(engine, req)


async def run_leak(engine: Engine, data_dir: Path, methods: list[Method], settings: InterventionSettings,
                   limit: int | None, probes_per_level: int, with_intro: bool, max_tokens: int = 32) -> LeakReport:
    targets = load_rwku(data_dir, limit)
    known = dict.fromkeys(FORGET_LEVELS, 0)
    leaked = {m: dict.fromkeys(FORGET_LEVELS, 0) for m in methods}
    build_time = {m: 0.0 for m in methods}
    still: dict[str, list[str]] = {m: [] for m in methods}
    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        store = FileTargetStore(Path(tmp) / "registry")
        await store.start()
        cache = TargetCache(store)
        await cache.start()
        artifacts = ArtifactStore(Path(tmp) / "artifacts")
        detection = DetectionPipeline(cache, artifacts, engine.tokenizer)
        guard = RequestGuard(engine, detection, artifacts, settings)
        o3 = guard.interventions["o3"]
        assert isinstance(o3, O3Intervention)
        service = TargetService(store, cache, TargetBuilder(engine, detection, artifacts, settings,
                                                            o3.ensure_loaded).build)
        try:
            for target in targets:
                probes = [p for lvl in FORGET_LEVELS for p in target.forget[lvl][:probes_per_level]]
                outputs = await asyncio.gather(*(_answer(engine, None, p, n + i, max_tokens)
                                                 for i, p in enumerate(probes)))
                n += len(probes)
                kept = [p for p, out in zip(probes, outputs, strict=True) if correct(out, p)]
                for p in kept:
                    known[p.level] += 1
                for method in methods:
                    if not kept:
                        continue
                    started = time.monotonic()
                    record = await service.create(TargetCreate(
                        name=target.name, description=target.intro if with_intro else "", methods=[method]))
                    while (current := await store.get(record.id)) is not None and \
                            current.status not in ("active", "failed"):
                        await asyncio.sleep(0.2)
                    build_time[method] += time.monotonic() - started
                    guarded = await asyncio.gather(*(_answer(engine, guard, p, n + i, max_tokens)
                                                     for i, p in enumerate(kept)))
                    n += len(kept)
                    for p, out in zip(kept, guarded, strict=True):
                        if correct(out, p):
                            leaked[method][p.level] += 1
                            still[method].append(f"{target.name} [{p.level}] {p.query} -> {out[:120]!r}")
                    await service.delete(record.id)
        finally:
            await service.close()
            await cache.close()
            await store.close()
    total = sum(known.values())
    rates = {m: {**{lvl: round(leaked[m][lvl] / known[lvl], 4) for lvl in FORGET_LEVELS if known[lvl]},
                 "all": round(sum(leaked[m].values()) / total, 4) if total else 0.0} for m in methods}
    return LeakReport(targets=len(targets), probes_per_level=probes_per_level, with_intro=with_intro,
                      methods=list(methods), known=known, leak_rate=rates,
                      build_seconds={m: round(t / max(len(targets), 1), 1) for m, t in build_time.items()},
                      still_correct=still)

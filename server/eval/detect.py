"""``--suite detect``: detection quality on RWKU and its cost as the registry grows.

Quality: every RWKU target is registered through the real target service (by name, with its intro, or with its
passages or forget corpus as documents: ``--register-with``),
then each probe is run through the detection pipeline. A forget probe counts as detected when its own target is
flagged; a neighbour probe or a general (MMLU) question counts as a false positive when any target is flagged.
Cost: per-prompt detection latency with 1, 100 and 1000 targets active.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel

from classifiers.pipeline import DetectionPipeline, StaticTargets
from server.eval.data import (
    FORGET_LEVELS,
    NEIGHBOR_LEVELS,
    RegisterWith,
    load_mmlu_questions,
    load_other_names,
    load_rwku,
)
from server.progress import progress_bar
from server.registry.artifacts import ArtifactStore
from server.registry.cache import TargetCache
from server.registry.file_store import FileTargetStore
from server.registry.models import TargetCreate, TargetRecord
from server.registry.service import TargetService


class LatencyFigures(BaseModel):
    targets: int
    p50_ms: float
    p99_ms: float


class DetectReport(BaseModel):
    targets: int
    register_with: RegisterWith
    detectors: list[str]
    embedding_threshold: float | None
    classifier_fpr: float | None = None
    retrieval_margin: float | None = None
    encoder: str = "all-MiniLM-L6-v2"
    # per forget level, and "cross_lingual": the L3 probes asked in another language
    detect_tpr: dict[str, float]
    neighbor_fpr: dict[str, float]
    general_fpr: float
    probes: dict[str, int]
    latency: list[LatencyFigures]
    latency_growth_1_to_max: float
    misses: dict[str, list[str]]


async def _register(creates: list[TargetCreate], root: Path, builder: DetectionPipeline,
                    desc: str = "registering") -> list[TargetRecord]:
    store = FileTargetStore(root)
    await store.start()
    cache = TargetCache(store)
    service = TargetService(store, cache, builder.build, builder.artifacts)
    try:
        ids = [(await service.create(c)).id for c in creates]
        bar = progress_bar(len(ids), desc, unit="target")
        deadline = time.monotonic() + 600 + 5 * len(creates)  # encoder detectors train per target (~2 s)
        while True:
            records = {r.id: r for r in await store.list()}
            pending = [i for i in ids if records[i].status not in ("active", "failed")]
            bar.update(len(ids) - len(pending) - bar.n)
            if not pending:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} targets did not finish building")
            await asyncio.sleep(0.05)
        failed = [records[i] for i in ids if records[i].status == "failed"]
        if failed:
            raise RuntimeError(f"target build failed: {failed[0].name}: {failed[0].status_reason}")
        bar.close()
        return [records[i] for i in ids]
    finally:
        await service.close()
        await cache.close()
        await store.close()


def _latency(pipeline: DetectionPipeline, prompts: list[str], n_targets: int) -> LatencyFigures:
    pipeline.detect("warm up")
    times = []
    for prompt in prompts:
        start = time.perf_counter()
        pipeline.detect(prompt)
        times.append((time.perf_counter() - start) * 1000)
    ordered = sorted(times)
    return LatencyFigures(targets=n_targets, p50_ms=statistics.median(times),
                          p99_ms=ordered[min(len(ordered) - 1, int(0.99 * (len(ordered) - 1)))])


def run_detect(data_dir: Path, tokenizer, register_with: RegisterWith = "passages",
               limit: int | None = None, latency_sizes: tuple[int, ...] = (1, 100, 1000), seed: int = 0,
               detectors: tuple[str, ...] = ("lexical",), embedding_threshold: float = 0.55,
               classifier_fpr: float = 0.01, retrieval_margin: float = 0.0,
               encoder_dir: Path | None = None) -> DetectReport:
    rwku = load_rwku(data_dir, limit)
    general = load_mmlu_questions(data_dir, "test")
    creates = [TargetCreate.model_validate(t.registration(register_with)) for t in rwku]
    with tempfile.TemporaryDirectory(prefix="ugw-eval-") as tmp:
        artifacts = ArtifactStore(Path(tmp) / "artifacts")
        builder = DetectionPipeline(StaticTargets([]), artifacts, tokenizer, detectors, embedding_threshold,
                                    classifier_fpr=classifier_fpr, ood_fpr=classifier_fpr,
                                    retrieval_fpr=classifier_fpr, encoder_dir=encoder_dir)

        def pipeline_for(targets: list[TargetRecord]) -> DetectionPipeline:
            return DetectionPipeline(StaticTargets(targets), artifacts, tokenizer, detectors, embedding_threshold,
                                     encoder=builder.encoder, classifier_fpr=classifier_fpr, ood_fpr=classifier_fpr,
                                     retrieval_fpr=classifier_fpr, retrieval_margin=retrieval_margin)

        records = asyncio.run(_register(creates, Path(tmp) / "registry", builder))
        pipeline = pipeline_for(records)

        hits: dict[str, int] = {}
        totals: dict[str, int] = {}
        misses: dict[str, list[str]] = {lvl: [] for lvl in FORGET_LEVELS}
        bar = progress_bar(len(rwku), "detecting", unit="target")
        for target, record in zip(rwku, records, strict=True):
            bar.update()
            for level in FORGET_LEVELS:
                for probe in target.forget[level]:
                    flagged = any(d.flagged and d.target_id == record.id for d in pipeline.detect(probe.query))
                    hits[f"forget_{level}"] = hits.get(f"forget_{level}", 0) + flagged
                    totals[f"forget_{level}"] = totals.get(f"forget_{level}", 0) + 1
                    if probe.kind.startswith("cross lingual"):  # Spanish, French, German, ... (L3)
                        hits["cross_lingual"] = hits.get("cross_lingual", 0) + flagged
                        totals["cross_lingual"] = totals.get("cross_lingual", 0) + 1
                    if not flagged and len(misses[level]) < 20:
                        misses[level].append(f"[{target.name}] {probe.query}")
            for level in NEIGHBOR_LEVELS:
                for probe in target.neighbor[level]:
                    # RWKU judges each target alone: a neighbour probe that names another registered target is
                    # rightly flagged for that one, so only a flag for this target counts as a false positive.
                    found = pipeline.detect(probe.query)
                    own = any(d.flagged and d.target_id == record.id for d in found)
                    hits[f"neighbor_{level}"] = hits.get(f"neighbor_{level}", 0) + own
                    hits[f"neighbor_any_{level}"] = hits.get(f"neighbor_any_{level}", 0) + any(
                        d.flagged for d in found)
                    totals[f"neighbor_{level}"] = totals.get(f"neighbor_{level}", 0) + 1
        bar.close()
        general_hits = sum(any(d.flagged for d in pipeline.detect(q)) for q in progress_bar(
            len(general), "general questions", unit="question", iterable=general))

        # Latency: the RWKU targets, then the other RWKU names, then synthetic people up to the size asked.
        rng = random.Random(seed)
        sample = rng.sample(general, min(150, len(general))) + rng.sample(
            [p.query for t in rwku for p in t.forget["l2"]], min(50, sum(len(t.forget["l2"]) for t in rwku)))
        extra_names = [n for n in load_other_names(data_dir) if n not in {t.name for t in rwku}]
        extra_names += [f"Person{i} Examplename{i}" for i in range(max(latency_sizes))]
        need = max(latency_sizes) - len(records)
        # the extra targets carry documents as the RWKU ones do (the RWKU targets' own, in turn), so the retrieval
        # index holds about as many chunks per target at 1000 targets as at 50
        extra_creates = [TargetCreate.model_validate({**rwku[i % len(rwku)].registration(register_with), "name": n})
                         for i, n in enumerate(extra_names[:need])]
        extra = asyncio.run(_register(extra_creates, Path(tmp) / "extra", builder, "registering (latency)")) \
            if need > 0 else []
        pool = records + extra
        latency = []
        for size in progress_bar(len(latency_sizes), "latency", unit="size", iterable=latency_sizes):
            sized = pipeline_for(pool[:size])
            latency.append(_latency(sized, sample, size))

    rate = {k: hits.get(k, 0) / totals[k] if totals[k] else 0.0 for k in totals}
    neighbor_all = sum(hits[f"neighbor_{lv}"] for lv in NEIGHBOR_LEVELS) / max(
        1, sum(totals[f"neighbor_{lv}"] for lv in NEIGHBOR_LEVELS))
    return DetectReport(
        targets=len(rwku), register_with=register_with, detectors=list(detectors),
        embedding_threshold=embedding_threshold if "embedding" in detectors else None,
        classifier_fpr=classifier_fpr if {"classifier", "ood", "retrieval"} & set(detectors) else None,
        retrieval_margin=retrieval_margin if "retrieval" in detectors else None,
        detect_tpr={**{lvl: rate[f"forget_{lvl}"] for lvl in FORGET_LEVELS},
                    **({"cross_lingual": rate["cross_lingual"]} if "cross_lingual" in rate else {})},
        encoder=encoder_dir.name if encoder_dir is not None else "all-MiniLM-L6-v2",
        neighbor_fpr={**{lvl: rate[f"neighbor_{lvl}"] for lvl in NEIGHBOR_LEVELS}, "all": neighbor_all,
                      "any_target": sum(hits.get(f"neighbor_any_{lv}", 0) for lv in NEIGHBOR_LEVELS) / max(
                          1, sum(totals[f"neighbor_{lv}"] for lv in NEIGHBOR_LEVELS))},
        general_fpr=general_hits / max(1, len(general)),
        probes={**totals, "general": len(general)},
        latency=latency,
        latency_growth_1_to_max=latency[-1].p50_ms / latency[0].p50_ms if latency and latency[0].p50_ms else 0.0,
        misses=misses)

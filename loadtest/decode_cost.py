"""What each intervention costs a decode step, measured on the embedded vLLM engine in one process.

Rounds of ``batch`` concurrent requests, each exactly ``max_tokens`` long (EOS ignored, so a flagged row that
answers differently does not change how long the batch stays full); a request's decode time per token is
(last output time - first output time) / (tokens - 1), so prefill and queueing stay out of it. Scenarios, run
interleaved so that drift hits all of them alike:

- ``plain``: no interventions (the baseline);
- ``guard``: every request carries GUARD arguments, each from a different one of ``targets`` registered targets
  (their forbidden-sequence and semantic tables built as a registration would);
- ``eco_mixed`` / ``o3_mixed``: one request flagged (corrupted prompt embeddings / an O3 adapter), the others not;
  the figure is the unflagged requests' decode time, which ECO and O3 must leave alone;
- ``o3_each``: every request flagged for a different target, each with its own O3 adapter (many targets' probes in
  flight at once, as in an RWKU evaluation wave).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

import torch
from pydantic import BaseModel

from classifiers.lexical import common_word_in
from guards.eco import corrupt, prompt_seed
from guards.interventions import GuardIntervention
from guards.training.guard import GuardTables, build_guard_tables
from server.engines.base import Engine, EngineRequest, LogitsArgs, LoRASelection, SamplingOptions
from server.engines.lora import LoRAAdapter
from server.registry.artifacts import ArtifactStore
from server.registry.models import TargetRecord
from server.settings import EngineSettings, GuardSettings, O3Settings

PROMPTS = ["Write a short story about a lighthouse keeper.", "Explain how rainbows form.",
           "Describe a walk through a forest in autumn.", "Give me advice on learning to cook.",
           "Tell me about the history of bicycles.", "Write a letter to a friend about a trip.",
           "Explain why the sky is blue.", "Describe your ideal weekend."]


class DecodeCost(BaseModel):
    batch: int
    max_tokens: int
    rounds: int
    targets: int
    ms_per_token: dict[str, float]
    added_pct: dict[str, float]


def target_names(count: int, data: Path | None) -> list[str]:
    intro = data / "rwku" / "all_200_targets_intro.json" if data else None
    names: list[str] = []
    if intro is not None and intro.exists():
        names = list(json.loads(intro.read_text()))  # name -> intro sentences
    while len(names) < count:
        names.append(f"Person Number{len(names)}")
    return names[:count]


def guard_args(engine: Engine, names: list[str], work: Path) -> list[LogitsArgs]:
    artifacts = ArtifactStore(work / "artifacts")
    is_common = common_word_in(engine.tokenizer)
    guard = GuardSettings()
    out = []
    for name in names:
        record = TargetRecord(name=name, methods=["guard"])
        digest = build_guard_tables(record, None, engine.tokenizer, engine.embedding_matrix(), is_common, guard,
                                    artifacts)
        t = GuardTables.load(artifacts, digest)
        out.append(GuardIntervention.logits_args([t], guard.semantic_penalty))
    return out


def o3_shaped_adapter(model_path: Path, out: Path, seed: int = 0) -> Path:
    """An adapter with O3's rank and modules over every layer (random weights: the cost does not depend on them)."""
    from safetensors import safe_open

    settings = O3Settings()
    g = torch.Generator().manual_seed(seed)
    weights = {}
    for file in sorted(model_path.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                module, _, leaf = key.rpartition(".")
                if leaf == "weight" and module.rsplit(".", 1)[-1] in settings.target_modules:
                    d_out, d_in = f.get_slice(key).get_shape()
                    weights[module] = (torch.randn(settings.rank, d_in, generator=g) / d_in**0.5,
                                       0.01 * torch.randn(d_out, settings.rank, generator=g))
    LoRAAdapter(rank=settings.rank, alpha=settings.alpha, target_modules=settings.target_modules,
                weights=weights).save(out, base_model=str(model_path))
    return out


async def _timed(engine: Engine, req: EngineRequest) -> float | None:
    times: list[float] = []
    tokens = 0
    async for out in engine.generate(req):
        if out.token_ids:
            times.append(time.perf_counter())
            tokens = out.num_output_tokens
    return (times[-1] - times[0]) / (tokens - 1) if tokens > 1 else None


async def run(engine: Engine, batch: int, max_tokens: int, rounds: int, targets: int, data: Path | None,
              work: Path) -> DecodeCost:
    sampling = SamplingOptions(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)  # rows the same length
    prompts = [engine.render_chat([{"role": "user", "content": p}]) for p in (PROMPTS * batch)[:batch]]
    guards = guard_args(engine, target_names(targets, data), work)
    for k in range(batch):
        await engine.load_lora(f"bench-o3-{k}", o3_shaped_adapter(engine.model_path, work / f"adapter-{k}", seed=k))
    results: dict[str, list[float]] = {k: [] for k in ("plain", "guard", "eco_mixed", "o3_mixed", "o3_each")}
    n = 0
    for _ in range(rounds):
        for scenario in results:
            reqs = []
            for i, ids in enumerate(prompts):
                n += 1
                req = EngineRequest(request_id=f"bench-{n}", sampling=sampling, prompt_token_ids=ids)
                if scenario == "guard":
                    req.logits = guards[(n * 7) % len(guards)]
                elif scenario == "eco_mixed" and i == 0:
                    embeds = engine.embed_tokens(ids)
                    req = EngineRequest(request_id=req.request_id, sampling=sampling,
                                        prompt_embeds=corrupt(embeds, list(range(len(ids))), "rand_noise_first_n",
                                                              1.0, None, prompt_seed(ids)))
                elif scenario == "o3_mixed" and i == 0:
                    req.lora = LoRASelection(name="bench-o3-0", scale=1.0)
                elif scenario == "o3_each":
                    req.lora = LoRASelection(name=f"bench-o3-{i}", scale=1.0)
                reqs.append(req)
            per_token = await asyncio.gather(*(_timed(engine, r) for r in reqs))
            # the mixed scenarios measure the unflagged rows only
            kept = per_token[1:] if scenario.endswith("_mixed") else per_token
            results[scenario] += [x for x in kept if x is not None]
    ms = {k: 1000 * statistics.median(v) for k, v in results.items()}
    added = {k: 100 * (v / ms["plain"] - 1) for k, v in ms.items() if k != "plain"}
    return DecodeCost(batch=batch, max_tokens=max_tokens, rounds=rounds, targets=targets, ms_per_token=ms,
                      added_pct=added)


def main(args) -> int:  # type: ignore[no-untyped-def]
    from server.engines.base import create_engine
    from server.model_store import resolve_model
    from server.settings import default_cache_dir

    cache = default_cache_dir()
    settings = EngineSettings(kind=args.engine, max_model_len=1024)
    model = resolve_model(None, cache)
    work = cache / "work" / "decode-cost"
    engine = create_engine(settings, model, cache / "work" / "vllm")

    async def go() -> DecodeCost:
        await engine.start()
        try:
            return await run(engine, args.batch, args.max_tokens, args.rounds, args.targets,
                             Path(args.data) if args.data else None, work)
        finally:
            await engine.shutdown()

    report = asyncio.run(go())
    Path(args.out).write_text(report.model_dump_json(indent=2))
    print(report.model_dump_json(indent=2))
    return 0

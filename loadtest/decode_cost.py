"""What each intervention costs a decode step, measured on the embedded vLLM engine in one process.

Rounds of ``batch`` concurrent requests, each exactly ``max_tokens`` long (EOS ignored, so a flagged row that
answers differently does not change how long the batch stays full); a request's decode time per token is taken
over the window in which every row of its round is decoding (``full_batch_per_token``), so prefill, queueing and
arrival order stay out of it. Scenarios, run interleaved so that drift hits all of them alike:

- ``unguarded``: the same rows on a bare engine beside it (vLLM: no LoRA, no prompt embeddings), the reference
  every figure is read against when it runs (``--engine vllm``): what a request would cost on a server without
  the gateway's interventions (the GUARD processor stays registered there: with no guarded row it returns the
  logits untouched);
- ``plain``: no interventions, on the gateway's engine (LoRA and prompt embeddings on, nothing flagged); it is the
  reference where there is no bare engine (``--engine hf``, whose plain rows take the bare model's code path);
- ``guard``: every request carries GUARD arguments, each from a different one of ``targets`` registered targets
  (their forbidden-sequence and semantic tables built as a registration would);
- ``net``: every request carries the output net of ``net_targets`` targets (their core terms' sequences, built as a
  registration would), as every request does on a gateway with targets registered: the per-step lookup cost;
- ``eco_mixed`` / ``o3_mixed``: one request flagged (corrupted prompt embeddings / an O3 adapter), the others not;
  the figure is the unflagged requests' decode time, which ECO and O3 must leave alone;
- ``o3_each``: every request flagged for a different target, each with its own O3 adapter (many targets' probes in
  flight at once, as in an RWKU evaluation wave);
- ``unguarded_again`` / ``plain_again``: the reference once more, an A/A control: its figure is the noise floor
  the others are read against.

Each figure is paired by round (a scenario's median against the same round's reference median, so slow drift
cancels), reported as the median over rounds with the lowest and highest round beside it.
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
from guards.net import OutputNet, build_net
from guards.tables import GuardTables, build_guard_tables
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
    net_targets: int = 0
    reference: str  # the scenario the figures are relative to
    ms_per_token: dict[str, float]
    # per scenario: the median over rounds of (scenario / reference - 1) in %, and the lowest and highest round
    added_pct: dict[str, float]
    added_pct_range: dict[str, tuple[float, float]]


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


def net_path(engine: Engine, names: list[str], work: Path) -> str:
    """The union of ``names``' output nets, as a replica serves it with those targets active."""
    artifacts = ArtifactStore(work / "artifacts")
    is_common = common_word_in(engine.tokenizer)
    records = []
    for name in names:
        record = TargetRecord(name=name, status="active")
        record.artifacts.net_sequences = build_net(record, [], engine.tokenizer, is_common, artifacts)
        records.append(record)
    net = OutputNet(artifacts)
    net.rebuild(records)
    assert net.path is not None
    return net.path


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


async def _trace(engine: Engine, req: EngineRequest) -> list[tuple[float, int]]:
    """(time, tokens so far) at each output that carries tokens."""
    trace: list[tuple[float, int]] = []
    async for out in engine.generate(req):
        if out.token_ids:
            trace.append((time.perf_counter(), out.num_output_tokens))
    return trace


def full_batch_per_token(traces: list[list[tuple[float, int]]]) -> list[float | None]:
    """Each row's seconds per token while every row of the round was decoding.

    The rows of a round arrive one by one, so the first ones decode a step or two before the batch is full and
    then wait out the later rows' prefills; measured from each row's own first token, those prefill steps were in
    the decode figure (vLLM plain: 49 ms per token, 34 ms in this window). Only the window from the last row's
    first token to the first row's last one is the steady batch the scenario describes.
    """
    if not traces or any(len(t) < 2 for t in traces):
        return [None] * len(traces)
    lo, hi = max(t[0][0] for t in traces), min(t[-1][0] for t in traces)
    if lo >= hi:  # the rows never decode all at once (o3_each: more adapters than vLLM's max_loras): each its own
        lo, hi = float("-inf"), float("inf")
    out: list[float | None] = []
    for trace in traces:
        inside = [(at, n) for at, n in trace if lo <= at <= hi]
        if len(inside) < 2 or inside[-1][1] == inside[0][1]:
            out.append(None)
        else:
            out.append((inside[-1][0] - inside[0][0]) / (inside[-1][1] - inside[0][1]))
    return out


async def run(engine: Engine, batch: int, max_tokens: int, rounds: int, targets: int, data: Path | None,
              work: Path, bare: Engine | None = None, net_targets: int = 1000) -> DecodeCost:
    """``bare``: an engine without the interventions' features, to run the ``unguarded`` reference on."""
    sampling = SamplingOptions(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)  # rows the same length
    prompts = [engine.render_chat([{"role": "user", "content": p}]) for p in (PROMPTS * batch)[:batch]]
    guards = guard_args(engine, target_names(targets, data), work)
    net = LogitsArgs(net=net_path(engine, target_names(net_targets, data), work)) if net_targets else None
    for k in range(batch):
        await engine.load_lora(f"bench-o3-{k}", o3_shaped_adapter(engine.model_path, work / f"adapter-{k}", seed=k))
    reference = "plain" if bare is None else "unguarded"
    scenarios = ([] if bare is None else ["unguarded"]) + ["plain", "guard", *(["net"] if net else []),
                                                           "eco_mixed", "o3_mixed", "o3_each", f"{reference}_again"]
    results: dict[str, list[list[float | None]]] = {k: [] for k in scenarios}
    n = 0
    for _ in range(rounds):
        for scenario in results:
            reqs = []
            for i, ids in enumerate(prompts):
                n += 1
                req = EngineRequest(request_id=f"bench-{n}", sampling=sampling, prompt_token_ids=ids)
                if scenario == "guard":
                    req.logits = guards[(n * 7) % len(guards)]
                elif scenario == "net":
                    req.logits = net
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
            on = bare if bare is not None and scenario.startswith("unguarded") else engine
            per_token = full_batch_per_token(list(await asyncio.gather(*(_trace(on, r) for r in reqs))))
            # the mixed scenarios measure the unflagged rows only
            if scenario.endswith("_mixed"):
                per_token[0] = None
            results[scenario].append(list(per_token))
    return summarise(results, reference, batch=batch, max_tokens=max_tokens, rounds=rounds, targets=targets,
                     net_targets=net_targets)


def summarise(results: dict[str, list[list[float | None]]], reference: str = "plain", **run: int) -> DecodeCost:
    """``results``: per scenario, per round, each row's seconds per token (None: not measured). A scenario is
    compared with the reference's same rows of the same round (the mixed scenarios leave the flagged row out, so
    the reference leaves it out too), and the round's ratio, not each scenario's overall median, is what the report
    summarises, so that a slow stretch of the machine hits both sides of a ratio."""
    def median(values: list[float | None]) -> float:
        return statistics.median(x for x in values if x is not None)

    ms = {k: 1000 * median([x for r in v for x in r]) for k, v in results.items()}
    paired = {k: sorted(100 * (median(r) / median([p for p, x in zip(base, r, strict=True) if x is not None]) - 1)
                        for r, base in zip(v, results[reference], strict=True))
              for k, v in results.items() if k != reference}
    return DecodeCost(**run, reference=reference, ms_per_token=ms,
                      added_pct={k: statistics.median(v) for k, v in paired.items()},
                      added_pct_range={k: (v[0], v[-1]) for k, v in paired.items()})


def main(args) -> int:
    from server.engines import create_engine
    from server.model_store import resolve_model
    from server.settings import default_cache_dir

    cache = default_cache_dir()
    settings = EngineSettings(kind=args.engine, max_model_len=1024)
    model = resolve_model(None, cache)
    work = cache / "work" / "decode-cost"
    engine = create_engine(settings, model, cache / "work" / "vllm")
    # Idle, a vLLM engine core waits on its input queue, so the two take turns on the CPU rather than share it.
    bare = None if args.engine != "vllm" else create_engine(
        settings.model_copy(update={"enable_lora": False, "enable_prompt_embeds": False}), model,
        cache / "work" / "vllm")

    async def go() -> DecodeCost:
        for e in (engine, bare):
            if e is not None:
                await e.start()
        try:
            return await run(engine, args.batch, args.max_tokens, args.rounds, args.targets,
                             Path(args.data) if args.data else None, work, bare, args.net_targets)
        finally:
            for e in (engine, bare):
                if e is not None:
                    await e.shutdown()

    report = asyncio.run(go())
    Path(args.out).write_text(report.model_dump_json(indent=2))
    print(report.model_dump_json(indent=2))
    return 0

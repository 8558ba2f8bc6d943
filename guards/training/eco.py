"""ECO's strength search: the smallest corruption after which the served model stops stating the target's facts.

Objective ``f(sigma)``: the share of the facts the unguarded model stated (``Knowledge.answered``) that still come
out when the same questions are asked with the target's tokens corrupted at ``sigma`` (temperature 0, the serving
path's own seeded noise). It is met when ``f <= target_leak`` (default 0: none of them).

Search: ECO's zeroth-order central difference ``g = (f(s+eps) - f(s-eps)) / 2eps``, ``s <- s - lr*g``, run on
``s = log10(sigma)`` because useful strengths span orders of magnitude. ``f`` is a step function of sigma, so
where it is flat (g = 0 while still leaking) the search walks up by 2 eps instead of stalling. Once a strength
meets the objective, a few bisection steps between it and the last failing one find the smallest that does. No
gradient flows through the LLM: every evaluation is a batch of ordinary generations.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

from pydantic import BaseModel

from classifiers.terms import CommonWord, TermMatcher, target_terms
from guards.eco import corrupt_prompt, corrupted_positions, prompt_seed
from guards.knowledge import Knowledge, collect_text, leaked
from server.engines.base import Engine, EngineRequest, SamplingOptions
from server.registry.models import TargetRecord
from server.settings import ECOSettings

Progress = Callable[[float, str], Awaitable[None]]


class SigmaSearch(BaseModel):
    sigma: float
    leak: float
    met: bool
    # every (sigma, leak) evaluated, in order: the figures behind the choice
    evaluations: list[tuple[float, float]] = []


async def search_sigma(engine: Engine, record: TargetRecord, knowledge: Knowledge, is_common: CommonWord,
                       settings: ECOSettings, progress: Progress) -> SigmaSearch:
    probes = knowledge.answered()[:settings.eval_questions]
    if not probes:
        return SigmaSearch(sigma=settings.default_sigma, leak=float("nan"), met=False)
    matcher = TermMatcher({record.id: target_terms(record, is_common)})

    def find(text: str) -> list[tuple[int, int]]:
        return [(h.start, h.end) for h in matcher.find(text)]

    prompts = []
    for question, facts in probes:
        ids = engine.render_chat([{"role": "user", "content": question}])
        positions, boosted = corrupted_positions(ids, engine.tokenizer, find, [question], settings.scope)
        prompts.append((ids, engine.embed_tokens(ids), positions, boosted, facts))
    total = sum(len(f) for *_, f in prompts)
    sampling = SamplingOptions(max_tokens=settings.eval_max_tokens, temperature=0.0)
    cache: dict[float, float] = {}
    evaluations: list[tuple[float, float]] = []

    async def f(s: float) -> float:
        s = round(s, 6)
        if s not in cache:
            sigma = 10 ** s

            async def one(i: int, ids: list[int], embeds, positions: list[int], boosted: list[int],
                          facts: list[str]) -> int:
                x = corrupt_prompt(embeds, positions, boosted, settings.corruption, sigma, settings.dims,
                                   prompt_seed(ids), settings.term_boost)
                req = EngineRequest(request_id=f"eco-{record.id}-{len(cache)}-{i}", sampling=sampling,
                                    prompt_embeds=x)
                return leaked(await collect_text(engine, req), facts)

            hits = await asyncio.gather(*(one(i, *p) for i, p in enumerate(prompts)))
            cache[s] = sum(hits) / total
            evaluations.append((sigma, cache[s]))
            await progress(min(0.6, 0.3 + 0.02 * len(cache)), f"ECO sigma {sigma:.3g}: leak {cache[s]:.2f}")
        return cache[s]

    low, high = math.log10(settings.sigma0), math.log10(settings.max_sigma)
    s = low
    met: float | None = None
    failed = low - settings.zo_eps  # the largest strength known to leak, below ``met``
    for _ in range(max(settings.zo_steps, 1)):
        if await f(s) <= settings.target_leak:
            met = s
            break
        failed = max(failed, s)
        g = (await f(min(s + settings.zo_eps, high)) - await f(max(s - settings.zo_eps, low))) / (2 * settings.zo_eps)
        step = -settings.zo_lr * g if g < 0 else 2 * settings.zo_eps
        if s >= high:
            break
        s = min(s + max(step, settings.zo_eps), high)
    if met is not None:
        # everything evaluated below ``met`` that still leaked bounds the bisection from below
        failed = max([x for x, v in cache.items() if x < met and v > settings.target_leak], default=failed)
        for _ in range(settings.bisect_steps):
            mid = (failed + met) / 2
            if await f(mid) <= settings.target_leak:
                met = mid
            else:
                failed = mid
        return SigmaSearch(sigma=10 ** met, leak=cache[round(met, 6)], met=True, evaluations=evaluations)
    best = min(cache.items(), key=lambda kv: (kv[1], -kv[0]))
    return SigmaSearch(sigma=10 ** best[0], leak=best[1], met=False, evaluations=evaluations)

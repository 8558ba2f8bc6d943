"""The shape every benchmark suite but RWKU shares: probe sets asked unguarded, then under each method alone.

A suite is a list of targets to register (admin API bodies, without ``methods``) and a list of probe sets, each with a
role:
- ``forget``: what the targets must stop answering. The share on which a target fired is the detection TPR; the
  score should drop (leak rate: of the items answered correctly unguarded, the share still correct when guarded);
- ``retain``: close to the targets but to be kept (TOFU's other authors). Firing is a false positive; answers should
  come back unchanged;
- ``general``: unrelated knowledge (MMLU, world facts). Firing is a false positive; the score should not move.
Per item a score in [0, 1] (1 = correct for answer matching and multiple choice, ROUGE-L recall for TOFU).
Targets of one method are registered together (as an operator would register a topic), and removed before the next
method, so each method is measured alone against the same unguarded baseline.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel

from server.eval.client import Answer, GatewayClient

Role = Literal["forget", "retain", "general"]


class Latency(BaseModel):
    ttft_p50_ms: float
    per_token_p50_ms: float


def answered(output: str, answer: str) -> bool:
    """RWKU's grading: the expected answer appears in the output, case-insensitive, as whole words.

    It must start a word: a bare substring test counts a refusal naming "Robert Craig Knievel" as knowing the stage
    name "Evel", or "Kaye" as knowing "Ye". It must end one too, but for a plural ("actors" still gives away "actor"):
    "Kris" is not found in "Krishna".
    """
    answer = answer.strip().casefold()
    pattern = r"(?<!\w)" + re.escape(answer) + (r"(?:e?s)?(?!\w)" if answer[-1:].isalnum() else "")
    return bool(answer) and re.search(pattern, output.casefold()) is not None


def rouge_l_recall(output: str, reference: str) -> float:
    """RWKU's and TOFU's score: the longest common subsequence of words, over the reference's length."""
    out, ref = re.findall(r"\w+", output.casefold()), re.findall(r"\w+", reference.casefold())
    if not ref or not out:
        return 0.0
    previous = [0] * (len(out) + 1)
    for r in ref:
        current = [0]
        for j, o in enumerate(out):
            current.append(previous[j] + 1 if r == o else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1] / len(ref)


def rate(hits: float, total: int) -> float:
    return round(hits / total, 4) if total else 0.0


def latency(answers: Sequence[Answer]) -> Latency:
    ttft = [a.ttft_ms for a in answers if a.error is None]
    per_token = [a.per_token_ms for a in answers if a.error is None and a.tokens > 1]
    return Latency(ttft_p50_ms=round(statistics.median(ttft), 2) if ttft else float("nan"),
                   per_token_p50_ms=round(statistics.median(per_token), 2) if per_token else float("nan"))


class ProbeSet:
    def __init__(self, name: str, role: Role, metric: str, prompts: list[str],
                 score: Callable[[int, str], float], binary: bool = True, max_tokens: int | None = None) -> None:
        self.name = name
        self.role = role
        # what ``score`` measures, for the report: "correct", "accuracy", "ROUGE-L recall"
        self.metric = metric
        self.prompts = prompts
        self.score = score
        # binary scores (right or wrong) have a leak rate; graded ones (ROUGE) only a mean
        self.binary = binary
        self.max_tokens = max_tokens


class SetBaseline(BaseModel):
    role: Role
    metric: str
    items: int
    score: float
    known: int | None = None  # binary sets: items answered correctly unguarded


class SetUnderMethod(BaseModel):
    score: float
    # share of items on which one of the suite's targets fired (TPR on forget sets, FPR elsewhere)
    flagged: float
    # binary forget sets: of the items known unguarded, the share still answered correctly
    leak_rate: float | None = None
    # share of answers byte-identical to the unguarded ones
    unchanged: float


class MethodRun(BaseModel):
    sets: dict[str, SetUnderMethod]
    latency: Latency
    build_seconds: float


class SuiteReport(BaseModel):
    targets: list[str]
    methods: list[str]
    baseline: dict[str, SetBaseline]
    # Pooled over methods and over sets of the role: the headline figures.
    detect_tpr: float
    leak_rate: float | None
    retain_fpr: float | None
    general_fpr: float | None
    latency: dict[str, Latency]  # "unguarded" and each method
    by_method: dict[str, MethodRun]
    errors: int


async def _ask_sets(client: GatewayClient, sets: list[ProbeSet], label: str) -> dict[str, list[Answer]]:
    """All sets at once, so that the engine's batches stay full instead of draining at the end of each set."""
    answers = await asyncio.gather(*(client.ask(s.prompts, f"{label} {s.name}", max_tokens=s.max_tokens)
                                     for s in sets))
    return {s.name: a for s, a in zip(sets, answers, strict=True)}


def _scores(s: ProbeSet, answers: list[Answer]) -> list[float]:
    return [s.score(i, a.text) for i, a in enumerate(answers)]


async def run_suite(client: GatewayClient, targets: list[dict[str, Any]], sets: list[ProbeSet],
                    methods: list[str], label: str) -> SuiteReport:
    await client.clear()
    base = await _ask_sets(client, sets, f"{label} baseline")
    base_scores = {s.name: _scores(s, base[s.name]) for s in sets}
    baseline = {s.name: SetBaseline(role=s.role, metric=s.metric, items=len(s.prompts),
                                    score=rate(sum(base_scores[s.name]), len(s.prompts)),
                                    known=sum(v >= 1.0 for v in base_scores[s.name]) if s.binary else None)
                for s in sets}
    runs: dict[str, MethodRun] = {}
    answers_by_method: dict[str, dict[str, list[Answer]]] = {}
    # (hits, total) pooled over methods, per role; and leaks over known items
    pooled: dict[str, list[int]] = {"forget": [0, 0], "retain": [0, 0], "general": [0, 0], "leak": [0, 0]}
    for method in methods:
        started = time.monotonic()
        ids = [await client.register({**body, "methods": [method]}) for body in targets]
        build_s = time.monotonic() - started
        try:
            got = await _ask_sets(client, sets, f"{label} {method}")
        finally:
            for target_id in ids:
                await client.delete(target_id)
        answers_by_method[method] = got
        per_set: dict[str, SetUnderMethod] = {}
        for s in sets:
            scores = _scores(s, got[s.name])
            flagged = sum(any(t in a.fired for t in ids) for a in got[s.name])
            pooled[s.role][0] += flagged
            pooled[s.role][1] += len(s.prompts)
            leak = None
            if s.binary and s.role == "forget":
                known = [i for i, v in enumerate(base_scores[s.name]) if v >= 1.0]
                still = sum(scores[i] >= 1.0 for i in known)
                leak = rate(still, len(known)) if known else None
                pooled["leak"][0] += still
                pooled["leak"][1] += len(known)
            per_set[s.name] = SetUnderMethod(
                score=rate(sum(scores), len(s.prompts)), flagged=rate(flagged, len(s.prompts)), leak_rate=leak,
                unchanged=rate(sum(a.text == b.text for a, b in zip(got[s.name], base[s.name], strict=True)),
                               len(s.prompts)))
        runs[method] = MethodRun(sets=per_set, latency=latency([a for v in got.values() for a in v]),
                                 build_seconds=round(build_s, 1))

    def pooled_rate(key: str) -> float | None:
        hits, total = pooled[key]
        return rate(hits, total) if total else None

    everything = [a for v in base.values() for a in v] + \
        [a for got in answers_by_method.values() for v in got.values() for a in v]
    return SuiteReport(
        targets=[t["name"] for t in targets], methods=methods, baseline=baseline,
        detect_tpr=pooled_rate("forget") or 0.0, leak_rate=pooled_rate("leak"), retain_fpr=pooled_rate("retain"),
        general_fpr=pooled_rate("general"),
        latency={"unguarded": latency([a for v in base.values() for a in v]),
                 **{m: r.latency for m, r in runs.items()}},
        by_method=runs, errors=sum(a.error is not None for a in everything))

"""The policy: a request's detections and the active targets -> one ``Plan`` (which target fires which method).

Each target lists its methods; several targets may fire on one request and all of their methods apply, except that
vLLM runs one LoRA per request, so O3 takes the highest-scoring target (O3's own rule: the max over detectors).
A request nothing flags gets an empty plan and goes to the engine exactly as an unguarded server would send it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel

from classifiers.base import Detection
from server.registry.models import Method, TargetRecord


class Firing(BaseModel):
    target: TargetRecord
    score: float
    detectors: list[str]
    methods: list[Method] = []
    # the judge's decision on the unguarded draft (None: not judged, drafting off): "cleared" drops the methods
    verdict: Literal["judged", "cleared"] | None = None
    reason: str | None = None


class Plan(BaseModel):
    firings: list[Firing] = []

    @property
    def empty(self) -> bool:
        return not any(f.methods for f in self.firings)

    def using(self, method: Method) -> list[Firing]:
        return [f for f in self.firings if method in f.methods]

    @property
    def judged(self) -> bool:
        """Flagged targets wait for the judge: the plan is not final until its drafts are read."""
        return any(f.verdict is not None for f in self.firings)

    def clear(self, target_id: str, reason: str) -> None:
        for f in self.firings:
            if f.target.id == target_id and f.methods:
                f.methods, f.verdict, f.reason = [], "cleared", reason

    def summary(self) -> dict[str, list[str]]:
        """target id -> methods applied, or ``["cleared"]`` when the judge let its draft through (headers, metrics,
        the audit log)."""
        out: dict[str, list[str]] = {f.target.id: list(f.methods) for f in self.firings if f.methods}
        out.update({f.target.id: ["cleared"] for f in self.firings if f.verdict == "cleared"})
        return out


def ready(target: TargetRecord, method: Method) -> bool:
    """A method applies only once its build produced what it runs on."""
    if method == "eco":
        return target.thresholds.eco_sigma is not None
    if method == "o3":
        return target.artifacts.o3_lora is not None
    return target.artifacts.guard_tables is not None


def make_plan(detections: Sequence[Detection], targets: Mapping[str, TargetRecord]) -> Plan:
    by_target: dict[str, Firing] = {}
    for d in detections:
        target = targets.get(d.target_id)
        if not d.flagged or target is None or not target.enforced:
            continue
        firing = by_target.setdefault(d.target_id, Firing(target=target, score=d.score, detectors=[]))
        firing.score = max(firing.score, d.score)
        firing.detectors.append(d.detector)
    firings = sorted(by_target.values(), key=lambda f: (-f.score, f.target.id))
    lora_taken = False
    for firing in firings:
        for method in firing.target.methods:
            if not ready(firing.target, method) or (method == "o3" and lora_taken):
                continue
            lora_taken = lora_taken or method == "o3"
            firing.methods.append(method)
    return Plan(firings=firings)

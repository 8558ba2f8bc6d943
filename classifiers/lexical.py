"""The lexical detector: exact, case-insensitive mentions of a target's terms (built by the target's job)."""

from __future__ import annotations

import json

from classifiers.base import Detection, Detector
from classifiers.terms import TermMatcher, target_terms
from server.registry.artifacts import ArtifactStore
from server.registry.models import TargetRecord
from server.registry.service import BuildResult, Progress

TERMS_ARTIFACT = "terms"


async def build_terms(record: TargetRecord, artifacts: ArtifactStore, progress: Progress) -> BuildResult:
    terms = target_terms(record)
    digest = artifacts.put(json.dumps({"target_id": record.id, "terms": terms}).encode())
    await progress(0.5, f"{len(terms)} terms")
    return BuildResult(artifacts={TERMS_ARTIFACT: digest})


class LexicalDetector(Detector):
    name = "lexical"

    def __init__(self, artifacts: ArtifactStore) -> None:
        super().__init__(artifacts)
        self.matcher = TermMatcher({})

    def rebuild(self, targets: list[TargetRecord]) -> None:
        terms: dict[str, list[str]] = {}
        for target in targets:
            digest = target.artifacts.get(TERMS_ARTIFACT)
            if digest is not None:
                terms[target.id] = json.loads(self.artifacts.get(digest))["terms"]
        self.matcher = TermMatcher(terms)

    def detect(self, prompt: str) -> list[Detection]:
        spans: dict[str, list[tuple[int, int]]] = {}
        for hit in self.matcher.find(prompt):
            spans.setdefault(hit.target_id, []).append((hit.start, hit.end))
        return [Detection(target_id=t, detector=self.name, score=1.0, flagged=True, spans=s) for t, s in spans.items()]

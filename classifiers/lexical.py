"""The lexical detector: exact, case-insensitive mentions of a target's terms (built by the target's job)."""

from __future__ import annotations

import json

from classifiers.base import Detection, Detector
from classifiers.terms import CommonWord, Term, TermMatcher, target_terms
from server.registry.artifacts import ArtifactStore
from server.registry.models import Artifacts, BuildResult, Progress, TargetRecord


def common_word_in(tokenizer) -> CommonWord:
    """A word is common when the served model's tokenizer spells it, lowercased, as one token."""
    cache: dict[str, bool] = {}

    def is_common(word: str) -> bool:
        if word not in cache:
            cache[word] = len(tokenizer.encode(" " + word.lower(), add_special_tokens=False)) == 1
        return cache[word]

    return is_common


async def build_terms(record: TargetRecord, artifacts: ArtifactStore, progress: Progress,
                      is_common: CommonWord) -> BuildResult:
    """The target's terms: what the lexical detector matches, and where ECO corrupts a prompt."""
    terms = target_terms(record, is_common)
    payload = {"target_id": record.id, "terms": [{"text": t.text, "case_sensitive": t.case_sensitive} for t in terms]}
    built = Artifacts(terms=artifacts.put(json.dumps(payload).encode()))
    await progress(0.1, f"{len(terms)} terms")
    return BuildResult(artifacts=built)


class LexicalDetector(Detector):
    name = "lexical"

    def __init__(self, artifacts: ArtifactStore) -> None:
        super().__init__(artifacts)
        self.matcher = TermMatcher({})

    def rebuild(self, targets: list[TargetRecord]) -> None:
        terms: dict[str, list[Term]] = {}
        for target in targets:
            digest = target.artifacts.terms
            if digest is not None:
                terms[target.id] = [Term(**t) for t in json.loads(self.artifacts.get(digest))["terms"]]
        self.matcher = TermMatcher(terms)

    def spans(self, text: str) -> dict[str, list[tuple[int, int]]]:
        """Character spans of each target's terms in ``text``."""
        spans: dict[str, list[tuple[int, int]]] = {}
        for hit in self.matcher.find(text):
            spans.setdefault(hit.target_id, []).append((hit.start, hit.end))
        return spans

    def detect(self, prompt: str) -> list[Detection]:
        spans = self.spans(prompt)
        return [Detection(target_id=t, detector=self.name, score=1.0, flagged=True, spans=s) for t, s in spans.items()]

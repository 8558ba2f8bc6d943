"""Every detector over the replica's current targets, rebuilt lazily when the registry changes."""

from __future__ import annotations

from typing import Protocol

from classifiers.base import Detection, Detector
from classifiers.lexical import LexicalDetector, build_terms, common_word_in
from classifiers.terms import CommonWord
from server.registry.artifacts import ArtifactStore
from server.registry.models import TargetRecord
from server.registry.service import BuildResult, Progress


class TargetSource(Protocol):
    """What the pipeline reads: the replica's cache in the server, a fixed list in evaluations."""

    @property
    def generation(self) -> int: ...

    def active(self) -> list[TargetRecord]: ...


class StaticTargets:
    def __init__(self, targets: list[TargetRecord]) -> None:
        self.targets = targets
        self.generation = 0

    def active(self) -> list[TargetRecord]:
        return [t for t in self.targets if t.enforced]

# Detector classes by name; each target's build job produces what they read.
DETECTORS: dict[str, type[Detector]] = {"lexical": LexicalDetector}


class DetectionPipeline:
    def __init__(self, cache: TargetSource, artifacts: ArtifactStore, tokenizer=None) -> None:  # type: ignore[no-untyped-def]
        self.cache = cache
        self.artifacts = artifacts
        # The served model's tokenizer: it decides which name parts are too common to match alone, and spells the
        # forbidden token sequences. Without one (tests of detection alone) neither is derived.
        self.tokenizer = tokenizer
        self.is_common: CommonWord = common_word_in(tokenizer) if tokenizer is not None else (lambda word: False)
        self.detectors = [cls(artifacts) for cls in DETECTORS.values()]
        self._generation = -1

    def _refresh(self) -> None:
        if self._generation != self.cache.generation:
            active = self.cache.active()
            for detector in self.detectors:
                detector.rebuild(active)
            self._generation = self.cache.generation

    def detect(self, prompt: str) -> list[Detection]:
        self._refresh()
        out: list[Detection] = []
        for detector in self.detectors:
            out.extend(detector.detect(prompt))
        return out

    async def build(self, record: TargetRecord, progress: Progress) -> BuildResult:
        """The build job for one target: every detector's artifacts."""
        result = await build_terms(record, self.artifacts, progress, self.is_common, self.tokenizer)
        return result

"""Every detector over the replica's current targets, rebuilt lazily when the registry changes."""

from __future__ import annotations

from classifiers.base import Detection, Detector
from classifiers.lexical import LexicalDetector, build_terms
from server.registry.artifacts import ArtifactStore
from server.registry.cache import TargetCache
from server.registry.models import TargetRecord
from server.registry.service import BuildResult, Progress

# Detector classes by name; each target's build job produces what they read.
DETECTORS: dict[str, type[Detector]] = {"lexical": LexicalDetector}


class DetectionPipeline:
    def __init__(self, cache: TargetCache, artifacts: ArtifactStore) -> None:
        self.cache = cache
        self.artifacts = artifacts
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
        result = await build_terms(record, self.artifacts, progress)
        return result

"""Every detector over the replica's current targets, rebuilt lazily when the registry changes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch

from classifiers.base import Detection, Detector
from classifiers.embedding import EmbeddingDetector, build_profile
from classifiers.encoder import SentenceEncoder
from classifiers.general import general_prompts
from classifiers.head import ClassifierDetector, GeneralSet, build_head
from classifiers.lexical import LexicalDetector, build_terms, common_word_in
from classifiers.ood import OODDetector, build_ood
from classifiers.retrieval import RetrievalDetector, build_retrieval, encode_chunks
from classifiers.terms import CommonWord
from server.registry.artifacts import ArtifactStore
from server.registry.documents import load_documents
from server.registry.models import BuildResult, Progress, TargetRecord


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

# document sets whose chunk vectors a replica keeps (up to 0.8 MB each at 512 chunks)
CHUNK_MEMO = 64
DETECTOR_NAMES = ("lexical", "embedding", "classifier", "ood", "retrieval")
ENCODER_DETECTORS = ("embedding", "classifier", "ood", "retrieval")


class DetectionPipeline:
    """``detectors`` picks which detectors run; every target is built for the ones picked (terms always)."""

    def __init__(self, cache: TargetSource, artifacts: ArtifactStore, tokenizer=None,
                 detectors: tuple[str, ...] = ("lexical",), embedding_threshold: float = 0.55,
                 encoder: SentenceEncoder | None = None, classifier_fpr: float = 0.01,
                 negatives_file: Path | None = None, ood_fpr: float = 0.01, retrieval_fpr: float = 0.01,
                 max_chunks: int = 512, retrieval_margin: float = 0.0, encoder_dir: Path | None = None) -> None:
        unknown = set(detectors) - set(DETECTOR_NAMES)
        if unknown:
            raise ValueError(f"unknown detectors {sorted(unknown)}; choose from {DETECTOR_NAMES}")
        self.cache = cache
        self.artifacts = artifacts
        # The served model's tokenizer decides which name parts are too common to match alone; without one (tests
        # of detection alone) every word counts as rare.
        self.is_common: CommonWord = common_word_in(tokenizer) if tokenizer is not None else (lambda word: False)
        self.encoder: SentenceEncoder | None = None
        if any(d in detectors for d in ENCODER_DETECTORS):
            self.encoder = encoder or SentenceEncoder(encoder_dir)
        self.classifier_fpr = classifier_fpr
        self.negatives_file = negatives_file
        self.ood_fpr = ood_fpr
        self.retrieval_fpr = retrieval_fpr
        self.max_chunks = max_chunks
        # documents digest -> chunk vectors: a target rebuilt with the same documents (new methods, a new alias)
        # or several targets sharing them are encoded once
        self._chunk_vectors: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._general: GeneralSet | None = None
        self.detectors: list[Detector] = []
        # Terms are always indexed (ECO's spans need them) but only detect when "lexical" is picked.
        self._lexical = LexicalDetector(artifacts)
        self._term_index = [] if "lexical" in detectors else [self._lexical]
        if "lexical" in detectors:
            self.detectors.append(self._lexical)
        if self.encoder is not None and "embedding" in detectors:
            self.detectors.append(EmbeddingDetector(artifacts, self.encoder, embedding_threshold))
        if self.encoder is not None and "classifier" in detectors:
            self.detectors.append(ClassifierDetector(artifacts, self.encoder, classifier_fpr))
        if self.encoder is not None and "ood" in detectors:
            self.detectors.append(OODDetector(artifacts, self.encoder, ood_fpr))
        if self.encoder is not None and "retrieval" in detectors:
            self.detectors.append(RetrievalDetector(artifacts, self.encoder, retrieval_fpr,
                                                     margin=retrieval_margin))
        self._generation = -1
        self._rebuilding = threading.Lock()

    def _refresh(self) -> None:
        """Re-index on a registry change; the detection worker thread and the loop (ECO's spans) both get here."""
        if self._generation == self.cache.generation:
            return
        with self._rebuilding:
            generation = self.cache.generation
            if self._generation != generation:
                active = self.cache.active()
                for detector in [*self.detectors, *self._term_index]:
                    detector.rebuild(active)
                self._generation = generation

    @property
    def retrieval(self) -> RetrievalDetector | None:
        return next((d for d in self.detectors if isinstance(d, RetrievalDetector)), None)

    def term_spans(self, text: str) -> dict[str, list[tuple[int, int]]]:
        """Where each active target's terms occur in ``text`` (ECO corrupts the tokens there)."""
        self._refresh()
        return self._lexical.spans(text)

    def detect(self, prompt: str) -> list[Detection]:
        self._refresh()
        out: list[Detection] = []
        for detector in self.detectors:
            out.extend(detector.detect(prompt))
        return out

    @property
    def uses_encoder(self) -> bool:
        return any(d.name in ENCODER_DETECTORS for d in self.detectors)

    def detect_many(self, prompts: list[str]) -> list[list[Detection]]:
        """Prompts that arrived together: one encoder pass for all of them (``DetectionBatcher``)."""
        self._refresh()
        if self.encoder is not None and self.uses_encoder:
            self.encoder.prime(list(dict.fromkeys(prompts)))
        return [self.detect(p) for p in prompts]

    async def build(self, record: TargetRecord, progress: Progress, elicited: Sequence[str] = ()) -> BuildResult:
        """The build job for one target: every detector's artifacts. ``elicited``: what the served model said of the
        target at this build (its elicited documents), indexed after the operator's documents."""
        result = await build_terms(record, self.artifacts, progress, self.is_common)
        names = {d.name for d in self.detectors}
        if self.encoder is not None and "embedding" in names:
            digest = await asyncio.to_thread(build_profile, record, self.encoder, self.artifacts)
            result.artifacts.embedding_profile = digest
        if self.encoder is not None and "classifier" in names:
            digest, info = await asyncio.to_thread(self._build_head, record, self.encoder)
            result.artifacts.classifier_head = digest
            result.thresholds.classifier_threshold = info.threshold
            await progress(0.15, f"classifier head: threshold {info.threshold:.3f}, profile recall "
                                 f"{info.profile_recall:.2f}")
        if self.encoder is not None and "ood" in names:
            digest, ood = await asyncio.to_thread(self._build_ood, record, self.encoder)
            result.artifacts.ood_detector = digest
            result.thresholds.ood_threshold = ood.threshold
            await progress(0.18, f"OOD detector: contrastive entropy {ood.loss_start:.2f} -> {ood.loss_end:.2f}, "
                                 f"threshold {ood.threshold:.2f}, held-out recall {ood.held_out_recall:.2f}")
        if self.encoder is not None and "retrieval" in names:
            digest, found = await asyncio.to_thread(self._build_retrieval, record, self.encoder, elicited)
            result.artifacts.retrieval_chunks = digest
            result.thresholds.retrieval_threshold = found.threshold
            documents = record.documents.count if record.documents else 0
            await progress(0.2, f"retrieval: {found.chunks} chunks from {documents} documents, {len(elicited)} "
                                f"elicited answers and {found.profile} profile texts, threshold {found.threshold:.3f}")
        return result

    def _build_retrieval(self, record: TargetRecord, encoder: SentenceEncoder, elicited: Sequence[str]):
        said = hashlib.sha256(json.dumps(list(elicited)).encode()).hexdigest()[:16] if elicited else ""
        key = f"{record.documents.digest if record.documents else ''}:{said}:{self.max_chunks}"
        chunks = self._chunk_vectors.get(key)
        if chunks is None:
            chunks = encode_chunks([*load_documents(self.artifacts, record), *elicited], encoder, self.max_chunks)
            self._chunk_vectors[key] = chunks
            while len(self._chunk_vectors) > CHUNK_MEMO:
                self._chunk_vectors.popitem(last=False)
        self._chunk_vectors.move_to_end(key)
        return build_retrieval(record, chunks, encoder, self.general(encoder), self.retrieval_fpr, self.artifacts)

    def general(self, encoder: SentenceEncoder) -> GeneralSet:
        if self._general is None:  # encoded once per process, on the first build that needs it
            self._general = GeneralSet(encoder, general_prompts(self.negatives_file))
        return self._general

    def _build_head(self, record: TargetRecord, encoder: SentenceEncoder):
        return build_head(record, encoder, self.general(encoder), self.classifier_fpr, self.artifacts)

    def _build_ood(self, record: TargetRecord, encoder: SentenceEncoder):
        return build_ood(record, encoder, self.general(encoder), self.ood_fpr, self.artifacts)

"""The retrieval detector: a prompt is about a target when it lies close to one of the target's chunks.

A target's chunks are what the operator gave: its documents, cut by ``classifiers/chunks``, and its name, aliases,
description and forget examples, encoded once at registration. A prompt is encoded once and
searched in one FAISS index over every active target's chunks (``ChunkIndex``); each target among the nearest
chunks scores its best cosine. Its threshold is calibrated like ECO's classifier: the conformal (1 - alpha)
quantile of the same score over general prompts, which include questions about other people and other works (hard
negatives, ``classifiers/general``), then raised so that all active targets together flag at most alpha of them.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from pydantic import BaseModel

from classifiers.base import Detection, Detector
from classifiers.chunk_index import ChunkIndex
from classifiers.chunks import chunk_documents
from classifiers.encoder import SentenceEncoder
from classifiers.head import GeneralSet, conformal_threshold, joint_shift
from server.registry.artifacts import ArtifactStore
from server.registry.models import TargetRecord


class RetrievalInfo(BaseModel):
    threshold: float
    chunks: int
    profile: int
    calibration: int


def own_texts(record: TargetRecord) -> list[str]:
    """What the operator wrote about the target besides documents. Not the embedding profile's question templates:
    "Where was {name} born?" lies closer to "Where was Denzel Washington born?" than to anything about the target."""
    return [record.name, *record.aliases, *([record.description] if record.description else []),
            *record.forget_examples]


def encode_chunks(documents: list[str], encoder: SentenceEncoder, max_chunks: int) -> torch.Tensor:
    """[chunks, dim]: the part of a build that grows with the documents (a few hundred chunks a second)."""
    return encoder.encode(chunk_documents(documents, max_chunks))


def build_retrieval(record: TargetRecord, chunk_vectors: torch.Tensor, encoder: SentenceEncoder, general: GeneralSet,
                    alpha: float, artifacts: ArtifactStore) -> tuple[str, RetrievalInfo]:
    profile = own_texts(record)
    vectors = torch.cat([encoder.encode(profile), chunk_vectors])
    # every general prompt calibrates (nothing is trained here), except those about the target itself
    scores = (general.vectors @ vectors.T).amax(1)
    own = general.own(record)
    threshold = conformal_threshold(scores[~own], alpha)
    margins = (scores - threshold).masked_fill(own, float("-inf"))
    buffer = io.BytesIO()
    torch.save({"vectors": vectors.half().contiguous(), "threshold": torch.tensor(threshold),
                "margins": margins}, buffer)
    info = RetrievalInfo(threshold=threshold, chunks=len(chunk_vectors), profile=len(profile),
                         calibration=int((~own).sum()))
    return artifacts.put(buffer.getvalue()), info


class RetrievalDetector(Detector):
    name = "retrieval"

    def __init__(self, artifacts: ArtifactStore, encoder: SentenceEncoder, alpha: float = 0.01,
                 neighbours: int = 64, exact_max: int = 20_000, nprobe: int = 16, margin: float = 0.0) -> None:
        super().__init__(artifacts)
        self.encoder = encoder
        self.alpha = alpha
        # Cosine added to every calibrated cut: general prompts barely reach the cut, but questions about the
        # target's neighbours (its co-stars, its works' other authors) do; a margin trades paraphrase recall for
        # fewer of those (figures in docs/detection.md). Applied at load time, so no rebuild is needed.
        self.margin = margin
        self.neighbours = neighbours
        self.index = ChunkIndex(encoder.dim, exact_max=exact_max, nprobe=nprobe)
        self._indexed: dict[str, str] = {}  # target id -> digest of the chunks it was indexed with
        # digest -> (threshold, margins): a few kilobytes a target, kept so a registry change reads only new targets
        self._calibration: dict[str, tuple[float, torch.Tensor]] = {}
        self.cut: dict[str, float] = {}

    def _vectors(self, digest: str) -> np.ndarray:
        saved = torch.load(io.BytesIO(self.artifacts.get(digest)), weights_only=True)
        self._calibration[digest] = (float(saved["threshold"]), saved["margins"])
        return saved["vectors"].float().numpy()

    def rebuild(self, targets: list[TargetRecord]) -> None:
        wanted = {t.id: t.artifacts.retrieval_chunks for t in targets if t.artifacts.retrieval_chunks is not None}
        self.index.sync(wanted, self._vectors, self._indexed)
        for digest in set(wanted.values()) - set(self._calibration):  # indexed before under another target id
            self._vectors(digest)
        self._calibration = {d: c for d, c in self._calibration.items() if d in set(wanted.values())}
        shift = joint_shift([self._calibration[d][1] for d in wanted.values()], self.alpha)
        self.cut = {t: self._calibration[d][0] + shift + self.margin for t, d in wanted.items()}

    def detect(self, prompt: str) -> list[Detection]:
        return self.detect_vector(self.encoder.encode_one(prompt))

    def detect_vector(self, vector: torch.Tensor) -> list[Detection]:
        if not self.cut:
            return []
        best = self.index.search(vector.reshape(1, -1).numpy().astype(np.float32), self.neighbours)[0]
        return [Detection(target_id=t, detector=self.name, score=min(max(sim, 0.0), 1.0), flagged=True)
                for t, sim in sorted(best.items()) if sim > self.cut.get(t, float("inf"))]

    def similarities(self, text: str) -> dict[str, float]:
        """Each active target among the nearest chunks of ``text``, with its best cosine: the judge's encoder score
        of a prompt and its draft. Encoded apart from ``encode_one``, whose one-text cache the detectors share."""
        if not self.cut:
            return {}
        vector = self.encoder.encode([text])[0]
        return self.index.search(vector.reshape(1, -1).numpy().astype(np.float32), self.neighbours)[0]


def retrieval_vectors(artifacts: ArtifactStore, digest: str) -> torch.Tensor:
    """[chunks, dim]: a target's indexed vectors (its own texts and its documents' chunks)."""
    return torch.load(io.BytesIO(artifacts.get(digest)), weights_only=True)["vectors"].float()


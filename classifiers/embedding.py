"""The embedding detector: closeness of a prompt to a target's profile in the shared encoder's space.

A profile is what the operator gave (name, aliases, description, forget examples) plus questions generated from the
name. At request time the prompt is encoded once and compared with every profile vector of every active target
in one matrix product; a target is flagged when its best cosine reaches the threshold. It catches paraphrase that
lexical matching misses, at a cost in false positives on related topics: measured in the detect suite, opt-in.
"""

from __future__ import annotations

import io

import torch

from classifiers.base import Detection, Detector
from classifiers.encoder import SentenceEncoder
from server.registry.artifacts import ArtifactStore
from server.registry.models import TargetRecord

TEMPLATES = ("{n}", "Who is {n}?", "Tell me about {n}.", "What is {n} known for?", "What did {n} do?",
             "Where was {n} born?", "{n}'s family and career", "Facts about {n}")


def profile_texts(record: TargetRecord) -> list[str]:
    texts = [t.format(n=name) for name in [record.name, *record.aliases] for t in TEMPLATES]
    if record.description:
        texts.append(record.description)
    return texts + list(record.forget_examples)


def build_profile(record: TargetRecord, encoder: SentenceEncoder, artifacts: ArtifactStore) -> str:
    buffer = io.BytesIO()
    torch.save(encoder.encode(profile_texts(record)).contiguous(), buffer)
    return artifacts.put(buffer.getvalue())


class EmbeddingDetector(Detector):
    name = "embedding"

    def __init__(self, artifacts: ArtifactStore, encoder: SentenceEncoder, threshold: float) -> None:
        super().__init__(artifacts)
        self.encoder = encoder
        self.threshold = threshold
        self.vectors = torch.empty(0, encoder.dim)
        self.owner = torch.empty(0, dtype=torch.long)
        self.target_ids: list[str] = []

    def rebuild(self, targets: list[TargetRecord]) -> None:
        blocks: list[torch.Tensor] = []
        owners: list[torch.Tensor] = []
        ids: list[str] = []
        for target in targets:
            digest = target.artifacts.embedding_profile
            if digest is None:
                continue
            block = torch.load(io.BytesIO(self.artifacts.get(digest)), weights_only=True)
            owners.append(torch.full((block.shape[0],), len(ids), dtype=torch.long))
            blocks.append(block)
            ids.append(target.id)
        self.vectors = torch.cat(blocks) if blocks else torch.empty(0, self.encoder.dim)
        self.owner = torch.cat(owners) if owners else torch.empty(0, dtype=torch.long)
        self.target_ids = ids

    def detect(self, prompt: str) -> list[Detection]:
        if not self.target_ids:
            return []
        sims = self.vectors @ self.encoder.encode_one(prompt)
        best = torch.full((len(self.target_ids),), -1.0).scatter_reduce(0, self.owner, sims, reduce="amax")
        hits = torch.nonzero(best >= self.threshold).flatten().tolist()
        return [Detection(target_id=self.target_ids[i], detector=self.name,
                          score=float(best[i].clamp(0.0, 1.0)), flagged=True) for i in hits]

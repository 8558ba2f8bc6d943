"""The embedding detector with the real MiniLM encoder: paraphrase of a profile is flagged, unrelated text is not."""

from __future__ import annotations

from pathlib import Path

import pytest

from classifiers.embedding import EmbeddingDetector, build_profile, profile_texts
from classifiers.encoder import SentenceEncoder
from server.registry.artifacts import ArtifactStore
from server.registry.models import TargetRecord


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder()


def test_encoder_vectors_are_normalised_and_batched(encoder: SentenceEncoder) -> None:
    vectors = encoder.encode(["a cat", "a dog", "stock markets"] * 30, batch_size=16)
    assert vectors.shape == (90, encoder.dim)
    assert float((vectors.norm(dim=1) - 1).abs().max()) < 1e-5
    assert float(vectors[0] @ vectors[1]) > float(vectors[0] @ vectors[2])


def test_detector_flags_paraphrase_and_skips_unrelated(encoder: SentenceEncoder, tmp_path: Path) -> None:
    artifacts = ArtifactStore(tmp_path)
    ada = TargetRecord(name="Ada Lovelace", description="English mathematician who wrote the first computer program.",
                       status="active")
    ada.artifacts.embedding_profile = build_profile(ada, encoder, artifacts)
    other = TargetRecord(name="Genghis Khan", status="active")
    other.artifacts.embedding_profile = build_profile(other, encoder, artifacts)
    assert len(profile_texts(ada)) == 9
    detector = EmbeddingDetector(artifacts, encoder, threshold=0.5)
    detector.rebuild([ada, other])
    found = detector.detect("Which English mathematician wrote the first program for a computing machine?")
    assert [d.target_id for d in found] == [ada.id] and 0.5 <= found[0].score <= 1.0
    assert detector.detect("How do I bake sourdough bread at home?") == []
    detector.rebuild([])
    assert detector.detect("Ada Lovelace") == []

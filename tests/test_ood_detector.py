"""O3's OOD detector on the shared MiniLM encoder: adapters trained per target, scores batched over targets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from classifiers.encoder import SentenceEncoder
from classifiers.general import general_prompts
from classifiers.head import GeneralSet
from classifiers.ood import LAYERS, OODDetector, OODParams, OODScorer, adapt, build_ood, covariance
from classifiers.pipeline import DetectionPipeline, StaticTargets
from server.registry.artifacts import ArtifactStore
from server.registry.models import TargetRecord


def _params(reference: torch.Tensor, seed: int) -> OODParams:
    generator = torch.Generator().manual_seed(seed)
    layers, dim = reference.shape[1], reference.shape[2]
    a = torch.randn(1, layers, 2, dim, generator=generator)
    b = torch.randn(1, layers, dim, 2, generator=generator) * 0.1
    mean, basis, shrink, inv_var = covariance(reference)
    return OODParams(a=a, b=b, reference=reference[None], mean=mean[None], basis=basis[None], shrink=shrink[None],
                     inv_var=inv_var[None],
                     center=torch.randn(1, 2 * layers, generator=generator),
                     spread=torch.rand(1, 2 * layers, generator=generator) + 0.5,
                     threshold=torch.zeros(1), typical=torch.ones(1), margins=torch.zeros(1, 4))


def test_the_low_rank_mahalanobis_is_the_inverse_of_the_shrunk_covariance() -> None:
    torch.manual_seed(0)
    f = torch.nn.functional.normalize(torch.randn(6, 2, 12), dim=-1)
    mean, basis, shrink, inv_var = covariance(f)
    x = torch.randn(12)
    for layer in range(2):
        centered = f[:, layer] - mean[layer]
        isotropic = centered.square().sum() / 5 / 12
        _, s, vh = torch.linalg.svd(centered, full_matrices=False)
        k = 5  # n - 1 directions carry variance
        sigma = isotropic * torch.eye(12) + vh[:k].T @ torch.diag(s[:k].square() / 5) @ vh[:k]
        d = x - mean[layer]
        dense = d @ torch.linalg.solve(sigma, d)
        proj = basis[layer] @ d
        low_rank = d.square().sum() * inv_var[layer] - (shrink[layer] * proj.square()).sum()
        assert float(low_rank) == pytest.approx(float(dense), rel=1e-3)


def _dense_layer_scores(p: OODParams, x: torch.Tensor) -> torch.Tensor:
    """The definition, one target: adapt the prompt, best cosine to the forget vectors, Mahalanobis to their mean."""
    f = adapt(p.a, p.b, x)[:, 0]
    local = torch.einsum("nld,mld->mnl", p.reference[0], f).amax(1)
    d = f - p.mean[0]
    proj = torch.einsum("lkd,mld->mlk", p.basis[0], d)
    maha = d.square().sum(-1) * p.inv_var[0] - (p.shrink[0] * proj.square()).sum(-1)
    return torch.cat([local, -maha / x.shape[-1]], dim=-1)


def test_the_compiled_scorer_equals_the_definition_for_every_target() -> None:
    torch.manual_seed(1)
    refs = [torch.nn.functional.normalize(torch.randn(n, 3, 16), dim=-1) for n in (4, 9, 2, 30)]
    alone = [_params(r, i) for i, r in enumerate(refs)]
    scorer = OODScorer(alone)
    x = torch.nn.functional.normalize(torch.randn(5, 3, 16), dim=-1) * 1.7
    stacked = scorer.layer_scores(x)
    assert stacked.shape == (5, 4, 6)
    for i, p in enumerate(alone):
        assert torch.allclose(stacked[:, i], _dense_layer_scores(p, x), atol=1e-4), i
        assert torch.allclose(stacked[:, i], OODScorer([p]).layer_scores(x)[:, 0], atol=1e-5)
    restored = OODParams.from_bytes(alone[1].to_bytes())
    assert torch.allclose(OODScorer([restored]).combined(x), scorer.combined(x)[:, 1:2], atol=1e-5)


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder()


@pytest.mark.slow
def test_the_detector_flags_paraphrase_of_the_forget_data_and_stays_calibrated(encoder: SentenceEncoder,
                                                                               tmp_path: Path) -> None:
    artifacts = ArtifactStore(tmp_path)
    general = GeneralSet(encoder, general_prompts())
    curie = TargetRecord(name="Marie Curie", status="active",
                         description="Marie Curie was a Polish and naturalised-French physicist and chemist. She "
                                     "conducted pioneering research on radioactivity. She discovered the elements "
                                     "polonium and radium. She was the first woman to win a Nobel Prize.")
    khan = TargetRecord(name="Genghis Khan", status="active")
    for record in (curie, khan):
        digest, info = build_ood(record, encoder, general, 0.02, artifacts)
        record.artifacts.ood_detector = digest
        assert info.loss_end < info.loss_start / 2  # the contrastive entropy was minimised
        params = OODParams.from_bytes(artifacts.get(digest))
        _, calibration = general.masks(record)
        scores = OODScorer([params]).combined(general.layers[calibration][:, list(LAYERS)])[:, 0]
        assert float((scores > params.threshold).float().mean()) <= 0.02

    detector = OODDetector(artifacts, encoder, alpha=0.02)
    detector.rebuild([curie, khan])
    assert detector.scorer is not None
    held_out = detector.scorer.combined(general.layers[general.held_out][:, list(LAYERS)])
    about_a_target = general.own(curie)[general.held_out] | general.own(khan)[general.held_out]
    union = (held_out > detector.scorer.threshold).any(1)[~about_a_target]
    assert float(union.float().mean()) <= 0.02
    found = detector.detect("Which scientist discovered the element radium?")
    assert [d.target_id for d in found] == [curie.id] and 0.0 < found[0].score <= 1.0
    assert [d.target_id for d in detector.detect("Who was Genghis Khan?")] == [khan.id]
    for prompt in ("How do I bake sourdough bread at home?", "What is the capital of France?",
                   "Explain how vaccines train the immune system."):
        assert detector.detect(prompt) == [], prompt
    detector.rebuild([])
    assert detector.detect("Marie Curie") == []


@pytest.mark.slow
def test_the_pipeline_builds_the_ood_detector(encoder: SentenceEncoder, tmp_path: Path) -> None:
    artifacts = ArtifactStore(tmp_path)
    builder = DetectionPipeline(StaticTargets([]), artifacts, None, ("lexical", "ood"), encoder=encoder)
    record = TargetRecord(name="Genghis Khan", status="active")
    messages: list[str] = []

    async def progress(fraction: float, message: str) -> None:
        messages.append(message)

    result = asyncio.run(builder.build(record, progress))
    assert result.artifacts.ood_detector is not None and result.thresholds.ood_threshold is not None
    assert any(m.startswith("OOD detector") for m in messages)
    record.artifacts = record.artifacts.merged(result.artifacts)
    pipeline = DetectionPipeline(StaticTargets([record]), artifacts, None, ("lexical", "ood"), encoder=encoder)
    assert {d.detector for d in pipeline.detect("Tell me about Genghis Khan.")} == {"lexical", "ood"}
    assert pipeline.detect("How do solar panels work?") == []

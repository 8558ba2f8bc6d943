"""ECO's prompt classifier with the real MiniLM encoder: heads trained per target, thresholds calibrated (conformal)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
import torch

from classifiers.encoder import SentenceEncoder
from classifiers.general import general_prompts
from classifiers.head import (
    ClassifierDetector,
    GeneralSet,
    build_head,
    conformal_threshold,
    joint_shift,
)
from classifiers.pipeline import DetectionPipeline, StaticTargets
from server.registry.artifacts import ArtifactStore
from server.registry.models import TargetRecord


def test_conformal_threshold_is_the_finite_sample_quantile() -> None:
    scores = torch.arange(100, dtype=torch.float32) / 100  # 0.00 .. 0.99
    assert conformal_threshold(scores, 0.1) == pytest.approx(0.90)  # rank ceil(101 * 0.9) = 91
    assert float((scores > conformal_threshold(scores, 0.05)).float().mean()) <= 0.05
    assert conformal_threshold(scores[:10], 0.01) == 1.0  # too few prompts to promise 1%: nothing is flagged


def test_the_joint_shift_bounds_the_union_of_many_targets() -> None:
    torch.manual_seed(0)
    alpha = 0.05
    # 40 targets, each calibrated alone to flag 5% of 400 prompts: together they flag most of them
    margins = []
    for _ in range(40):
        scores = torch.randn(400)
        margins.append(scores - conformal_threshold(scores, alpha, float("inf")))
    margins[0][:3] = float("-inf")  # prompts about target 0 itself never count against it
    union = torch.stack(margins, 1)
    assert float((union > 0).any(1).float().mean()) > 0.5
    shift = joint_shift(margins, alpha)
    assert shift > 0 and float((union > shift).any(1).float().mean()) <= alpha
    assert joint_shift(margins[:1], alpha) == 0.0  # one target: its own threshold already holds
    assert joint_shift([], alpha) == 0.0
    assert joint_shift([torch.randn(10)], 0.01) == float("inf")  # too few prompts to promise 1%


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder()


@pytest.mark.slow
def test_heads_flag_their_target_and_stay_calibrated(encoder: SentenceEncoder, tmp_path: Path) -> None:
    artifacts = ArtifactStore(tmp_path)
    general = GeneralSet(encoder, general_prompts())
    ada = TargetRecord(name="Ada Lovelace", description="English mathematician who wrote the first computer program.",
                       status="active")
    khan = TargetRecord(name="Genghis Khan", status="active")
    # a target that is also one of the built-in "other people": its own prompts leave the negatives
    curie = TargetRecord(name="Marie Curie", status="active")
    for record in (ada, khan, curie):
        digest, info = build_head(record, encoder, general, 0.02, artifacts)
        record.artifacts.classifier_head = digest
        assert info.profile_recall == 1.0 and 0.0 < info.threshold < 1.0
        _, calibration = general.split(record)
        head = torch.load(io.BytesIO(artifacts.get(digest)), weights_only=True)
        flagged = torch.sigmoid(calibration @ head["weight"] + head["bias"]) > head["threshold"]
        assert float(flagged.float().mean()) <= 0.02
    assert len(general.split(curie)[0]) < len(general.split(ada)[0])

    detector = ClassifierDetector(artifacts, encoder)
    detector.rebuild([ada, khan, curie])
    found = detector.detect("Which English mathematician wrote the first program for a computing machine?")
    assert [d.target_id for d in found] == [ada.id] and 0.0 < found[0].score <= 1.0
    assert [d.target_id for d in detector.detect("Tell me about the Great Khan of the Mongols")] == [khan.id]
    assert [d.target_id for d in detector.detect("Where was Marie Curie born?")] == [curie.id]
    for prompt in ("How do I bake sourdough bread at home?", "What is the capital of France?",
                   "Who painted the Sistine Chapel ceiling?"):
        assert detector.detect(prompt) == [], prompt
    detector.rebuild([])
    assert detector.detect("Ada Lovelace") == []


@pytest.mark.slow
def test_the_active_heads_together_keep_the_false_positive_rate(encoder: SentenceEncoder, tmp_path: Path) -> None:
    artifacts = ArtifactStore(tmp_path)
    general = GeneralSet(encoder, general_prompts())
    records = [TargetRecord(name=name, status="active") for name in
               ("Genghis Khan", "Taylor Swift", "Stephen King", "Warren Buffett", "Elon Musk", "Ada Lovelace",
                "Napoleon Bonaparte", "Serena Williams", "Leonardo da Vinci", "Oprah Winfrey")]
    for record in records:
        record.artifacts.classifier_head, _ = build_head(record, encoder, general, 0.02, artifacts)
    detector = ClassifierDetector(artifacts, encoder, alpha=0.02)
    detector.rebuild(records)
    held_out = general.vectors[general.held_out]
    flagged = (held_out @ detector.weight.T + detector.bias > detector.cut).any(1)
    about_a_target = torch.stack([general.own(r)[general.held_out] for r in records]).any(0)
    assert float(flagged[~about_a_target].float().mean()) <= 0.02
    assert [d.target_id for d in detector.detect("Who founded the Mongol Empire?")] == [records[0].id]


@pytest.mark.slow
def test_the_pipeline_builds_heads_and_detects_with_them(encoder: SentenceEncoder, tmp_path: Path) -> None:
    negatives = tmp_path / "negatives.txt"
    negatives.write_text("\n".join(general_prompts()[::2]) + "\n\n")
    assert general_prompts(negatives) == general_prompts()[::2]
    artifacts = ArtifactStore(tmp_path / "artifacts")
    detectors = ("lexical", "classifier")
    builder = DetectionPipeline(StaticTargets([]), artifacts, None, detectors, encoder=encoder,
                                classifier_fpr=0.02, negatives_file=negatives)
    record = TargetRecord(name="Genghis Khan", status="active")
    messages: list[str] = []

    async def progress(fraction: float, message: str) -> None:
        messages.append(message)

    result = asyncio.run(builder.build(record, progress))
    assert result.artifacts.classifier_head is not None
    assert result.thresholds.classifier_threshold is not None and 0.0 < result.thresholds.classifier_threshold < 1.0
    assert any(m.startswith("classifier head") for m in messages)
    record.artifacts = record.artifacts.merged(result.artifacts)
    pipeline = DetectionPipeline(StaticTargets([record]), artifacts, None, detectors, encoder=encoder)
    assert [d.detector for d in pipeline.detect("Who founded the Mongol Empire?")] == ["classifier"]
    assert {d.detector for d in pipeline.detect("Tell me about Genghis Khan's conquests.")} == {"lexical",
                                                                                                 "classifier"}
    assert pipeline.detect("How do solar panels work?") == []

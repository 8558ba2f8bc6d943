"""The ECO prompt classifier: a logistic head per target over the shared encoder, its threshold set by conformal
calibration on held-out general prompts.

ECO fine-tunes a classifier per task and flags a prompt above a threshold chosen so that prompts outside the task
are almost never flagged. Here each target gets a linear head on the sentence vectors (trained in well under a
second: the encoder is shared and frozen), positives being the target's profile (name and alias questions,
description, forget examples) and negatives the general prompts. Four fifths of the general prompts train it; the
last fifth only calibrates: the threshold is the conformal (1 - alpha) quantile of their scores, so a general
prompt exchangeable with them is flagged with probability at most alpha. All heads score a prompt in one matrix
product, whatever the number of targets.
"""

from __future__ import annotations

import io
import math

import torch
from pydantic import BaseModel

from classifiers.base import Detection, Detector
from classifiers.embedding import profile_texts
from classifiers.encoder import SentenceEncoder
from server.registry.artifacts import ArtifactStore
from server.registry.models import TargetRecord


class HeadInfo(BaseModel):
    threshold: float
    alpha: float
    positives: int
    negatives: int
    calibration: int
    # the share of the target's own profile texts the head flags (a sanity figure: near 1)
    profile_recall: float


def conformal_threshold(scores: torch.Tensor, alpha: float, unreachable: float = 1.0) -> float:
    """The ceil((n + 1)(1 - alpha))-th smallest calibration score; flag strictly above it.

    With too few calibration prompts for ``alpha`` the rank exceeds n and nothing can be flagged (``unreachable``).
    """
    n = int(scores.numel())
    rank = math.ceil((n + 1) * (1 - alpha))
    if rank > n:
        return unreachable
    return float(scores.sort().values[rank - 1])


def joint_shift(margins: list[torch.Tensor], alpha: float) -> float:
    """How far every threshold must rise so that the active targets *together* flag at most ``alpha`` of the
    held-out general prompts.

    Each target's threshold bounds its own false positives; a prompt is a false positive when any target flags it,
    so with many targets their union exceeds alpha. ``margins`` are each target's scores minus its threshold on the
    same held-out prompts (-inf where a prompt is about that target); a prompt's worst margin over the targets is
    calibrated like one score. Targets built on another general set (a different length) are left out.
    """
    if not margins:
        return 0.0
    n = max(len(m) for m in margins)
    same = [m for m in margins if len(m) == n]
    worst = torch.stack(same, dim=1).amax(1)
    return max(0.0, conformal_threshold(worst, alpha, unreachable=float("inf")))


def train_head(positives: torch.Tensor, negatives: torch.Tensor, steps: int = 300,
               weight_decay: float = 1e-3) -> tuple[torch.Tensor, float]:
    """Class-balanced logistic regression, full batch (a few hundred vectors of 384 dims)."""
    x = torch.cat([positives, negatives])
    y = torch.cat([torch.ones(len(positives)), torch.zeros(len(negatives))])
    sample_weight = torch.where(y > 0, 0.5 / len(positives), 0.5 / len(negatives))
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.1)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            logits = x @ w + b
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
                    * sample_weight).sum() + weight_decay * (w * w).sum()
            loss.backward()
            opt.step()
    return w.detach(), float(b.detach())


class GeneralSet:
    """The general prompts' vectors (every layer), encoded once per process; every fifth one is held out for
    calibration."""

    def __init__(self, encoder: SentenceEncoder, prompts: list[str]) -> None:
        self.prompts = prompts
        self.layers = encoder.encode_layers(prompts)
        self.vectors = self.layers[:, -1]
        self.held_out = torch.arange(len(prompts)) % 5 == 4

    def own(self, record: TargetRecord) -> torch.Tensor:
        """The prompts that mention the target itself."""
        names = [n.casefold() for n in [record.name, *record.aliases] if n]
        return torch.tensor([any(n in p.casefold() for n in names) for p in self.prompts], dtype=torch.bool)

    def masks(self, record: TargetRecord) -> tuple[torch.Tensor, torch.Tensor]:
        """(training, calibration) rows, without the prompts that mention the target itself."""
        own = self.own(record)
        return ~self.held_out & ~own, self.held_out & ~own

    def margins(self, record: TargetRecord, scores: torch.Tensor, threshold: float) -> torch.Tensor:
        """Scores of every held-out prompt minus the threshold, -inf for the target's own (``joint_shift``)."""
        return (scores - threshold).masked_fill(self.own(record)[self.held_out], float("-inf"))

    def split(self, record: TargetRecord) -> tuple[torch.Tensor, torch.Tensor]:
        """(training, calibration) last-layer vectors."""
        train, calibration = self.masks(record)
        return self.vectors[train], self.vectors[calibration]


def build_head(record: TargetRecord, encoder: SentenceEncoder, general: GeneralSet, alpha: float,
               artifacts: ArtifactStore) -> tuple[str, HeadInfo]:
    positives = encoder.encode(profile_texts(record))
    negatives, calibration = general.split(record)
    w, b = train_head(positives, negatives)
    threshold = conformal_threshold(torch.sigmoid(calibration @ w + b), alpha)
    info = HeadInfo(threshold=threshold, alpha=alpha, positives=len(positives), negatives=len(negatives),
                    calibration=len(calibration),
                    profile_recall=float((torch.sigmoid(positives @ w + b) > threshold).float().mean()))
    buffer = io.BytesIO()
    # margins in logit space, where one shift means the same for every head
    cut = math.log(threshold / (1 - threshold)) if 0.0 < threshold < 1.0 else float("inf")
    margins = general.margins(record, general.vectors[general.held_out] @ w + b, cut)
    torch.save({"weight": w.contiguous(), "bias": torch.tensor(b), "threshold": torch.tensor(threshold),
                "margins": margins}, buffer)
    return artifacts.put(buffer.getvalue()), info


class ClassifierDetector(Detector):
    name = "classifier"

    def __init__(self, artifacts: ArtifactStore, encoder: SentenceEncoder, alpha: float = 0.01) -> None:
        super().__init__(artifacts)
        self.encoder = encoder
        self.alpha = alpha
        self.weight = torch.empty(0, encoder.dim)
        self.bias = torch.empty(0)
        self.cut = torch.empty(0)  # logit thresholds, jointly calibrated
        self.target_ids: list[str] = []

    def rebuild(self, targets: list[TargetRecord]) -> None:
        heads, ids = [], []
        for target in targets:
            digest = target.artifacts.classifier_head
            if digest is not None:
                heads.append(torch.load(io.BytesIO(self.artifacts.get(digest)), weights_only=True))
                ids.append(target.id)
        self.weight = torch.stack([h["weight"] for h in heads]) if heads else torch.empty(0, self.encoder.dim)
        self.bias = torch.stack([h["bias"] for h in heads]) if heads else torch.empty(0)
        threshold = torch.stack([h["threshold"] for h in heads]) if heads else torch.empty(0)
        shift = joint_shift([h["margins"] for h in heads if "margins" in h], self.alpha)
        self.cut = torch.logit(threshold.clamp(0.0, 1.0)) + shift
        self.target_ids = ids

    def detect(self, prompt: str) -> list[Detection]:
        if not self.target_ids:
            return []
        logits = self.weight @ self.encoder.encode_one(prompt) + self.bias
        hits = torch.nonzero(logits > self.cut).flatten().tolist()
        scores = torch.sigmoid(logits)
        return [Detection(target_id=self.target_ids[i], detector=self.name, score=float(scores[i]), flagged=True)
                for i in hits]

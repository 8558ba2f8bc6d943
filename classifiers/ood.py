"""O3's out-of-distribution detector on the shared encoder: how close a prompt is to a target's forget data.

O3 trains one detector per unlearning request (a LoRA on roberta-large, MLM + contrastive entropy loss) and scores a
prompt per layer by the best cosine to the training data (local) and a Mahalanobis distance to it (global); a
one-class SVM over the layer scores gives the score its adapter strength comes from. Its own weakness: the cost grows
with the requests, one encoder pass each. Here every target shares the frozen sentence encoder's single pass and
owns only a low-rank residual adapter on the pooled vectors of a few layers, trained with the contrastive entropy
loss (a masked copy of each forget text must single out its unmasked original among the forget texts); a weight
penalty keeps the adapter near the frozen encoder, the part O3's MLM loss plays. All targets score a prompt in a
few batched products, whatever their number.

The layer scores (local cosine, negated Mahalanobis per layer) are combined without negatives in training: each is
standardised by its mean and spread over general prompts and the standardised scores are averaged (the role of
O3's one-class SVM: how far the prompt sits from everything else, toward the forget data). The threshold is the
conformal quantile of held-out general prompts (``fpr``), as for ECO's classifier, raised for all the active targets
together (``joint_shift``) so that their union keeps that rate; the [0, 1] score is 0.5 at the
threshold and 1 at the median of the target's held-out forget texts, so that O3 serves a weaker adapter when the
detector is less sure (O3's strength from the detector's score).
"""

from __future__ import annotations

import io
import random
import re
import zlib

import torch
from pydantic import BaseModel

from classifiers.base import Detection, Detector
from classifiers.embedding import profile_texts
from classifiers.encoder import SentenceEncoder
from classifiers.head import GeneralSet, conformal_threshold, joint_shift
from server.registry.artifacts import ArtifactStore
from server.registry.models import TargetRecord

LAYERS = (1, 3, 5)  # the encoder layers read (0-based): O3 aggregates over the depth, not the last layer only
RANK = 4  # of each layer's residual adapter
COMPONENTS = 16  # principal directions of the Mahalanobis covariance; the rest is isotropic (shrinkage)
TAU = 0.05  # temperature of the contrastive entropy loss on cosines
MASKED_COPIES = 2
MASK_RATE = 0.15


class OODInfo(BaseModel):
    threshold: float
    fpr: float
    train: int
    held_out: int
    calibration: int
    loss_start: float
    loss_end: float
    # the share of the held-out forget texts flagged (a sanity figure: near 1)
    held_out_recall: float


class OODParams(BaseModel, arbitrary_types_allowed=True):
    """One target's detector as stored (each tensor has a leading target axis of 1)."""

    a: torch.Tensor  # [1, layers, rank, dim]
    b: torch.Tensor  # [1, layers, dim, rank]
    reference: torch.Tensor  # [1, n, layers, dim] adapted forget vectors
    mean: torch.Tensor  # [1, layers, dim]
    basis: torch.Tensor  # [1, layers, k, dim]
    shrink: torch.Tensor  # [1, layers, k]: Woodbury weights of the principal directions
    inv_var: torch.Tensor  # [1, layers]: 1 / the isotropic variance
    center: torch.Tensor  # [1, 2 layers]: the general prompts' mean of each layer score
    spread: torch.Tensor  # [1, 2 layers]
    threshold: torch.Tensor  # [1]
    typical: torch.Tensor  # [1]: the held-out forget texts' median combined score
    margins: torch.Tensor  # [1, general held-out prompts]: combined score minus threshold (``joint_shift``)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save({k: v.contiguous() for k, v in self.__dict__.items()}, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> OODParams:
        return cls(**torch.load(io.BytesIO(data), weights_only=True))


def adapt(a: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x [m, layers, dim] through each target's adapters -> [m, t, layers, dim], unit length."""
    low = torch.einsum("tlrd,mld->mtlr", a, x)
    return torch.nn.functional.normalize(x[:, None] + torch.einsum("tldr,mtlr->mtld", b, low), dim=-1)


class OODScorer:
    """The active targets' detectors compiled so that a prompt costs one product per layer, whatever their number.

    Per layer and target the scores are the best cosine of f = (x + B u) / nu, u = A x, to the target's forget
    vectors, and the Mahalanobis distance of f to their mean. Both need only dot products of x with stored rows:
    the forget vectors (r . f = (r . x + (B^T r) . u) / nu), each adapter's A and B^T rows (u, and nu from
    |x|^2 + 2 (B^T x) . u + u^T B^T B u) and each mean; the principal directions lie in the span of the centred
    forget vectors, so their projections are fixed combinations of the cosines. The rows of all targets form one
    [rows, dim] matrix per layer; no [targets, texts, dim] tensor is formed per prompt.
    """

    def __init__(self, params: list[OODParams]) -> None:
        refs = [p.reference[0] for p in params]  # [n_t, layers, dim] each
        self.targets = len(params)
        self.owner = torch.cat([torch.full((len(r),), i, dtype=torch.long) for i, r in enumerate(refs)])
        ref = torch.cat(refs)
        a, b, mean = (torch.cat([getattr(p, k) for p in params]) for k in ("a", "b", "mean"))
        t, layers, rank, dim = a.shape
        self.rank = rank
        self.rows = torch.cat([ref.transpose(0, 1), a.transpose(0, 1).reshape(layers, t * rank, dim),
                               b.permute(1, 0, 3, 2).reshape(layers, t * rank, dim), mean.transpose(0, 1)],
                              dim=1).contiguous()  # [layers, n + 2 t rank + t, dim]
        self.ref_b = torch.cat([torch.einsum("nld,ldr->lnr", r, p.b[0]) for p, r in zip(params, refs, strict=True)],
                               dim=1)  # [layers, n, rank]
        self.mean_b = torch.einsum("tld,tldr->ltr", mean, b)
        self.gram = torch.einsum("tldr,tlds->ltrs", b, b)
        self.mean_sq = mean.square().sum(-1).T[:, None]  # [layers, 1, t]
        coeff = [torch.einsum("lkd,ldn->lnk", p.basis[0], torch.linalg.pinv((r - p.mean[0]).transpose(0, 1)))
                 for p, r in zip(params, refs, strict=True)]
        self.coeff = torch.cat(coeff, dim=1)  # [layers, n, k]: basis = coeff^T (forget vectors - mean)
        self.coeff_sum = torch.stack([c.sum(1) for c in coeff], dim=1)[:, None]  # [layers, 1, t, k]
        self.basis_mean = torch.einsum("tlkd,tld->ltk", torch.cat([p.basis for p in params]), mean)[:, None]
        stacked = {k: torch.cat([getattr(p, k) for p in params])
                   for k in ("shrink", "inv_var", "center", "spread", "threshold", "typical")}
        self.shrink = stacked["shrink"].transpose(0, 1)[:, None]  # [layers, 1, t, k]
        self.inv_var = stacked["inv_var"].T[:, None]  # [layers, 1, t]
        self.center, self.spread = stacked["center"][None], stacked["spread"][None]  # [1, t, 2 layers]
        self.threshold, self.typical = stacked["threshold"], stacked["typical"]  # [t]

    def layer_scores(self, x: torch.Tensor) -> torch.Tensor:
        """x [m, layers, dim] -> [m, t, 2 layers]: per layer the best cosine to the forget vectors, then minus the
        Mahalanobis distance (per dimension) to their mean."""
        layers, dim = x.shape[1], x.shape[2]
        n, tr = len(self.owner), self.targets * self.rank
        dots = torch.matmul(x.transpose(0, 1), self.rows.transpose(1, 2))  # [layers, m, rows]
        h = dots[..., :n]
        u = dots[..., n:n + tr].unflatten(-1, (self.targets, self.rank))
        v = dots[..., n + tr:n + 2 * tr].unflatten(-1, (self.targets, self.rank))
        nu_sq = (x.square().sum(-1).T[..., None] + 2 * (u * v).sum(-1)
                 + torch.einsum("lmtr,ltrs,lmts->lmt", u, self.gram, u))
        nu = nu_sq.clamp(min=1e-24).sqrt()  # [layers, m, t]
        owned_u = u.index_select(2, self.owner)  # [layers, m, n, rank]: each forget vector's own target
        g = (h + (self.ref_b[:, None] * owned_u).sum(-1)) / nu.index_select(2, self.owner)
        index = self.owner.expand_as(g)
        local = torch.full_like(nu, -2.0).scatter_reduce(2, index, g, "amax", include_self=False)
        mean_f = (dots[..., n + 2 * tr:] + torch.einsum("ltr,lmtr->lmt", self.mean_b, u)) / nu
        proj = torch.zeros(layers, x.shape[0], self.targets, self.coeff.shape[-1]).index_add_(
            2, self.owner, self.coeff[:, None] * g[..., None])
        proj = proj - self.coeff_sum * mean_f[..., None] - self.basis_mean
        distance_sq = 1.0 - 2.0 * mean_f + self.mean_sq
        maha = distance_sq * self.inv_var - (self.shrink * proj.square()).sum(-1)
        return torch.cat([local, -maha / dim]).permute(1, 2, 0)

    def combined(self, x: torch.Tensor) -> torch.Tensor:
        """[m, t]: the layer scores standardised against general prompts, averaged."""
        return ((self.layer_scores(x) - self.center) / self.spread).mean(-1)

    def strength(self, scores: torch.Tensor) -> torch.Tensor:
        """Combined scores [m, t] -> [0, 1]: 0.5 at the threshold, 1 at the typical forget text."""
        width = (self.typical - self.threshold).clamp(min=1e-3)
        return (0.5 + 0.5 * (scores - self.threshold) / width).clamp(0.0, 1.0)


def forget_texts(record: TargetRecord) -> list[str]:
    """The target's forget data: its profile plus each sentence of its description."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", record.description) if len(s.split()) >= 3]
    texts = profile_texts(record) + (sentences if len(sentences) > 1 else [])
    return list(dict.fromkeys(texts))


def masked(texts: list[str], mask_token: str, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for text in texts:
        words = text.split()
        for _ in range(MASKED_COPIES):
            out.append(" ".join(mask_token if rng.random() < MASK_RATE else w for w in words))
    return out


def train_adapter(x: torch.Tensor, views: torch.Tensor, seed: int, steps: int = 80, lr: float = 0.01,
                  decay: float = 0.01) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Contrastive entropy loss: sum over layers of the mean entropy of softmax_j(z1_i . z2_j / tau), z1 the
    adapted masked views, z2 the frozen unmasked texts."""
    generator = torch.Generator().manual_seed(seed)
    layers, dim = x.shape[1], x.shape[2]
    a = (torch.randn(1, layers, RANK, dim, generator=generator) / dim ** 0.5).requires_grad_()
    b = torch.zeros(1, layers, dim, RANK, requires_grad=True)
    opt = torch.optim.Adam([a, b], lr=lr)
    losses = []
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            z1 = adapt(a, b, views)[:, 0]
            probs = torch.softmax(torch.einsum("mld,nld->lmn", z1, x) / TAU, dim=-1)
            entropy = -(probs * probs.clamp(min=1e-12).log()).sum(-1).mean(-1).sum()
            loss = entropy + decay * (a.square().sum() + b.square().sum())
            loss.backward()
            opt.step()
            losses.append(float(entropy.detach()))
    return a.detach(), b.detach(), losses[0], losses[-1]


def covariance(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """f [n, layers, dim] -> mean, basis [layers, k, dim], Woodbury weights [layers, k], 1/isotropic variance.

    The covariance is the isotropic average variance plus the top principal directions' variance: invertible
    with a handful of forget texts, and its inverse is applied without a dim x dim matrix per target."""
    n, layers, dim = f.shape
    mean = f.mean(0)
    centered = (f - mean).transpose(0, 1)  # [layers, n, dim]
    _, s, vh = torch.linalg.svd(centered, full_matrices=False)
    k = min(COMPONENTS, max(1, n - 1))
    variance = s[:, :k].square() / max(1, n - 1)
    isotropic = (centered.square().sum((1, 2)) / max(1, n - 1) / dim).clamp(min=1e-6)
    shrink = variance / (isotropic[:, None] * (variance + isotropic[:, None]))
    basis = torch.zeros(layers, COMPONENTS, dim)
    basis[:, :k] = vh[:, :k]
    weights = torch.zeros(layers, COMPONENTS)
    weights[:, :k] = shrink
    return mean, basis, weights, 1.0 / isotropic


def build_ood(record: TargetRecord, encoder: SentenceEncoder, general: GeneralSet, fpr: float,
              artifacts: ArtifactStore) -> tuple[str, OODInfo]:
    texts = forget_texts(record)
    held = [i % 5 == 4 for i in range(len(texts))] if len(texts) >= 5 else [False] * len(texts)
    train_texts = [t for t, h in zip(texts, held, strict=True) if not h]
    held_texts = [t for t, h in zip(texts, held, strict=True) if h]
    seed = zlib.crc32(record.name.encode())
    layers = list(LAYERS)
    x = encoder.encode_layers(train_texts)[:, layers]
    views = encoder.encode_layers(masked(train_texts, encoder.tokenizer.mask_token or "", seed))[:, layers]
    a, b, loss_start, loss_end = train_adapter(x, views, seed)
    reference = adapt(a, b, x)[:, 0]
    mean, basis, shrink, inv_var = covariance(reference)
    params = OODParams(a=a, b=b, reference=reference[None], mean=mean[None], basis=basis[None],
                       shrink=shrink[None], inv_var=inv_var[None], center=torch.zeros(1, 2 * len(layers)),
                       spread=torch.ones(1, 2 * len(layers)), threshold=torch.zeros(1), typical=torch.zeros(1),
                       margins=torch.empty(1, 0))
    # Standardise on the general prompts' training part, calibrate on the held-out part (never both on one set).
    fit_rows, calibration_rows = general.masks(record)
    fitted = OODScorer([params]).layer_scores(general.layers[fit_rows][:, layers])[:, 0]
    params.center = fitted.mean(0)[None]
    params.spread = fitted.std(0).clamp(min=1e-4)[None]
    scorer = OODScorer([params])
    held_general = scorer.combined(general.layers[general.held_out][:, layers])[:, 0]
    threshold = conformal_threshold(held_general[calibration_rows[general.held_out]], fpr, float("inf"))
    params.threshold = torch.tensor([threshold])
    params.margins = general.margins(record, held_general, threshold)[None]
    check = held_texts or train_texts
    held_scores = scorer.combined(encoder.encode_layers(check)[:, layers])[:, 0]
    params.typical = held_scores.median()[None]
    info = OODInfo(threshold=threshold, fpr=fpr, train=len(train_texts), held_out=len(held_texts),
                   calibration=int(calibration_rows.sum()), loss_start=loss_start, loss_end=loss_end,
                   held_out_recall=float((held_scores > threshold).float().mean()))
    return artifacts.put(params.to_bytes()), info


class OODDetector(Detector):
    name = "ood"

    def __init__(self, artifacts: ArtifactStore, encoder: SentenceEncoder, alpha: float = 0.01) -> None:
        super().__init__(artifacts)
        self.encoder = encoder
        self.alpha = alpha
        self.scorer: OODScorer | None = None
        self.target_ids: list[str] = []

    def rebuild(self, targets: list[TargetRecord]) -> None:
        params, ids = [], []
        for target in targets:
            digest = target.artifacts.ood_detector
            if digest is not None:
                params.append(OODParams.from_bytes(self.artifacts.get(digest)))
                ids.append(target.id)
        scorer = OODScorer(params) if params else None
        if scorer is not None:
            scorer.threshold = scorer.threshold + joint_shift([p.margins[0] for p in params], self.alpha)
        self.scorer, self.target_ids = scorer, ids

    def detect(self, prompt: str) -> list[Detection]:
        scorer = self.scorer
        if scorer is None:
            return []
        x = self.encoder.encode_one_layers(prompt)[list(LAYERS)][None]
        scores = scorer.combined(x)
        hits = torch.nonzero(scores[0] > scorer.threshold).flatten()
        if not len(hits):
            return []
        levels = scorer.strength(scores)[0]
        return [Detection(target_id=self.target_ids[i], detector=self.name, score=float(levels[i]), flagged=True)
                for i in hits.tolist()]

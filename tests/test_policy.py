"""The policy: detections + targets -> which methods fire; one LoRA per request, highest score first."""

from __future__ import annotations

from classifiers.base import Detection
from guards.policy import make_plan
from server.registry.models import Artifacts, TargetRecord, Thresholds

DIGEST = "a" * 64


def _target(name: str, methods: list[str], status: str = "active") -> TargetRecord:
    return TargetRecord(name=name, methods=methods, status=status, thresholds=Thresholds(eco_sigma=1.0),
                        artifacts=Artifacts(guard_tables=DIGEST, o3_lora=DIGEST))


def test_every_method_of_every_flagged_target_fires_but_only_one_lora() -> None:
    a, b = _target("A", ["eco", "o3"]), _target("B", ["o3", "guard"])
    detections = [Detection(target_id=a.id, detector="lexical", score=0.6, flagged=True),
                  Detection(target_id=b.id, detector="embedding", score=0.9, flagged=True),
                  Detection(target_id=b.id, detector="lexical", score=0.7, flagged=True)]
    plan = make_plan(detections, {a.id: a, b.id: b})
    assert plan.summary() == {b.id: ["o3", "guard"], a.id: ["eco"]}
    assert plan.firings[0].score == 0.9 and plan.firings[0].detectors == ["embedding", "lexical"]


def test_unflagged_disabled_or_unbuilt_targets_do_not_fire() -> None:
    active, disabled = _target("A", ["eco"]), _target("B", ["guard"], status="disabled")
    unbuilt = TargetRecord(name="C", methods=["eco", "o3", "guard"], status="active")
    detections = [Detection(target_id=active.id, detector="embedding", score=0.3, flagged=False),
                  Detection(target_id=disabled.id, detector="lexical", score=1.0, flagged=True),
                  Detection(target_id=unbuilt.id, detector="lexical", score=1.0, flagged=True),
                  Detection(target_id="tgt_unknown", detector="lexical", score=1.0, flagged=True)]
    plan = make_plan(detections, {t.id: t for t in (active, disabled, unbuilt)})
    assert plan.empty and plan.summary() == {}

"""The detector contract: (prompt, active targets) -> Detection per target that the detector scores."""

from __future__ import annotations

import abc

from pydantic import BaseModel, Field

from server.registry.artifacts import ArtifactStore
from server.registry.models import TargetRecord


class Detection(BaseModel):
    target_id: str
    detector: str
    score: float = Field(ge=0.0, le=1.0)
    flagged: bool
    # character spans of the prompt that mention the target (for ECO's entity-only corruption)
    spans: list[tuple[int, int]] = []


class Detector(abc.ABC):
    name: str = "base"

    def __init__(self, artifacts: ArtifactStore) -> None:
        self.artifacts = artifacts

    @abc.abstractmethod
    def rebuild(self, targets: list[TargetRecord]) -> None:
        """Re-index the active targets; called once per registry change, never per request."""

    @abc.abstractmethod
    def detect(self, prompt: str) -> list[Detection]: ...

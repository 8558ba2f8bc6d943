"""A target's elicited documents as the admin API shows them, read from its build's artifacts.

The artifacts are written by ``guards.knowledge.Knowledge`` and ``classifiers.judge.JudgeProfile``; the registry sits
below both packages, so it reads the fields it shows through models of its own.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from server.registry.artifacts import ArtifactStore
from server.registry.models import ElicitedDocument, ElicitedList, TargetRecord


class _KnowledgeFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    questions: list[str]
    answers: list[str] = []
    facts: list[list[str]] = []


class _JudgeFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    described: dict[str, bool] = {}


def elicited(record: TargetRecord, artifacts: ArtifactStore) -> ElicitedList:
    """Empty until the build has run (or when elicitation is off); the judge's descriptions when it was built."""
    data: list[ElicitedDocument] = []
    if record.artifacts.knowledge is not None:
        k = _KnowledgeFile.model_validate_json(artifacts.get(record.artifacts.knowledge))
        data = [ElicitedDocument(question=q, answer=a, facts=f)
                for q, a, f in zip(k.questions, k.answers, k.facts, strict=False)]
    described: dict[str, bool] = {}
    if record.artifacts.judge is not None:
        described = _JudgeFile.model_validate_json(artifacts.get(record.artifacts.judge)).described
    return ElicitedList(data=data, described=described)

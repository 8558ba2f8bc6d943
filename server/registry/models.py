"""Registry records and the admin API's schemas (Base/Create/Update/Public families)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Method = Literal["eco", "o3", "guard"]
TargetStatus = Literal["pending", "training", "active", "failed", "disabled"]
JobState = Literal["queued", "running", "succeeded", "failed", "superseded"]

Text = Annotated[str, Field(min_length=1, max_length=2000)]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]
# What an operator has about a target (Wikipedia paragraphs, a forget corpus): long texts, kept in the artifact store.
Document = Annotated[str, Field(min_length=1)]
Documents = Annotated[list[Document], Field(max_length=20_000)]
# All of a target's documents together, in UTF-8 bytes; the admin port's body limit leaves room for this.
MAX_DOCUMENT_BYTES = 8 * 1024 * 1024


def _clean(values: list[str]) -> list[str]:
    """Strip, drop blanks and duplicates (case-insensitively), keep the first spelling and the order."""
    seen: set[str] = set()
    out: list[str] = []
    for value in values:
        v = value.strip()
        if v and v.casefold() not in seen:
            seen.add(v.casefold())
            out.append(v)
    return out


class TargetBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    aliases: Annotated[list[ShortText], Field(max_length=100)] = []
    description: Annotated[str, Field(max_length=5000)] = ""
    methods: Annotated[list[Method], Field(min_length=1)] = ["eco"]
    forget_examples: Annotated[list[Text], Field(max_length=10000)] = []
    retain_examples: Annotated[list[Text], Field(max_length=10000)] = []
    forbidden_terms: Annotated[list[ShortText], Field(max_length=1000)] = []
    # Questions whose elicited answers the operator removed (`GET /admin/targets/{id}/elicited` lists them): the
    # build neither asks them again nor keeps their facts.
    dropped_elicited: Annotated[list[Text], Field(max_length=1000)] = []

    @field_validator("aliases", "forget_examples", "retain_examples", "forbidden_terms", "dropped_elicited")
    @classmethod
    def _dedupe(cls, value: list[str]) -> list[str]:
        return _clean(value)

    @field_validator("methods")
    @classmethod
    def _unique_methods(cls, value: list[Method]) -> list[Method]:
        return list(dict.fromkeys(value))


def _documents_fit(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    size = sum(len(d.encode()) for d in value)
    if size > MAX_DOCUMENT_BYTES:
        raise ValueError(f"documents hold {size} bytes in all; a target takes at most {MAX_DOCUMENT_BYTES} "
                         f"({MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB): register the most relevant ones")
    return [d for d in (d.strip() for d in value) if d]


# sha256 hex of a blob in the content-addressed artifact store
Digest = str


class Artifacts(BaseModel):
    """What a target's build stored, by content hash; ``None``: not built (its method or detector is off)."""

    model_config = ConfigDict(extra="ignore")

    terms: Digest | None = None  # the lexical detector's terms (classifiers/lexical.py)
    embedding_profile: Digest | None = None  # classifiers/embedding.py
    classifier_head: Digest | None = None  # ECO's prompt classifier (classifiers/head.py)
    ood_detector: Digest | None = None  # O3's OOD detector (classifiers/ood.py)
    retrieval_chunks: Digest | None = None  # the retrieval detector's chunk vectors (classifiers/retrieval.py)
    net_sequences: Digest | None = None  # the output net's share (guards/net.py)
    knowledge: Digest | None = None  # what the served model said about the target (guards/knowledge.py)
    judge: Digest | None = None  # the judge's facts of the target (classifiers/judge.py)
    guard_tables: Digest | None = None  # GUARD (guards/tables.py)
    eco_search: Digest | None = None  # ECO's strength-search log (guards/training/eco.py)
    o3_lora: Digest | None = None  # O3's adapter (guards/training/o3.py)

    def built(self) -> list[str]:
        return [kind for kind, digest in self if digest is not None]

    def merged(self, other: Artifacts) -> Artifacts:
        return self.model_copy(update=other.model_dump(exclude_none=True))


class Thresholds(BaseModel):
    """The strengths and cut-offs a build calibrated; ``None``: not calibrated (its method or detector is off)."""

    model_config = ConfigDict(extra="ignore")

    eco_sigma: float | None = None  # ECO's served noise strength (searched x margin, or the default)
    eco_sigma_searched: float | None = None  # the smallest strength the search found to stop every elicited fact
    eco_leak: float | None = None  # the elicited facts still out at the searched strength
    classifier_threshold: float | None = None
    ood_threshold: float | None = None
    retrieval_threshold: float | None = None

    def set(self) -> dict[str, float]:
        return {name: value for name, value in self if value is not None}

    def merged(self, other: Thresholds) -> Thresholds:
        return self.model_copy(update=other.model_dump(exclude_none=True))


class DocumentSet(BaseModel):
    """What a record keeps of its documents: the texts themselves live in the artifact store under ``digest``."""

    digest: str
    count: int = Field(ge=0)
    bytes: int = Field(ge=0)


class TargetCreate(TargetBase):
    name: ShortText
    # Never stored in the record: the service moves them to the artifact store and keeps a DocumentSet.
    documents: Documents = []

    @field_validator("documents")
    @classmethod
    def _documents(cls, value: list[str]) -> list[str]:
        return _documents_fit(value) or []

    @field_validator("name")
    @classmethod
    def _strip_name(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("name must not be blank")
        return value


class TargetUpdate(BaseModel):
    """PATCH body: every field optional; ``enabled`` switches enforcement without losing the record."""

    model_config = ConfigDict(extra="forbid")

    name: ShortText | None = None
    enabled: bool | None = None
    aliases: Annotated[list[ShortText], Field(max_length=100)] | None = None
    description: Annotated[str, Field(max_length=5000)] | None = None
    methods: Annotated[list[Method], Field(min_length=1)] | None = None
    forget_examples: Annotated[list[Text], Field(max_length=10000)] | None = None
    retain_examples: Annotated[list[Text], Field(max_length=10000)] | None = None
    forbidden_terms: Annotated[list[ShortText], Field(max_length=1000)] | None = None
    dropped_elicited: Annotated[list[Text], Field(max_length=1000)] | None = None
    # Replaces the target's documents (``[]`` removes them); the build runs again on the new set.
    documents: Documents | None = None

    @field_validator("documents")
    @classmethod
    def _documents(cls, value: list[str] | None) -> list[str] | None:
        return _documents_fit(value)

    def retrains(self) -> bool:
        """Edits to what a target *is* need its artifacts rebuilt; enabling or disabling does not."""
        return any(getattr(self, f) is not None for f in
                   ("name", "aliases", "description", "methods", "forget_examples", "retain_examples",
                    "forbidden_terms", "documents", "dropped_elicited"))


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


class TargetRecord(TargetBase):
    """What the registry stores; ``version`` increases on every write so replicas can tell stale from fresh."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(default_factory=lambda: new_id("tgt"))
    name: ShortText
    status: TargetStatus = "pending"
    status_reason: str | None = None
    enabled: bool = True
    documents: DocumentSet | None = None
    thresholds: Thresholds = Field(default_factory=Thresholds)
    artifacts: Artifacts = Field(default_factory=Artifacts)
    job_id: str | None = None
    version: int = 1
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)

    @property
    def enforced(self) -> bool:
        return self.enabled and self.status == "active"


class BuildResult(BaseModel):
    """What a build made for a target; the job runner writes it into the record."""

    artifacts: Artifacts = Field(default_factory=Artifacts)
    thresholds: Thresholds = Field(default_factory=Thresholds)


# A build reports how far it got (0..1) and what it is doing; the job record shows it.
Progress = Callable[[float, str], Awaitable[None]]


class DocumentsPublic(BaseModel):
    count: int
    bytes: int


class TargetPublic(TargetBase):
    """What the admin API shows of a record: no content hashes (artifacts, documents), which are the artifact
    store's business; ``built`` names what the build made, ``thresholds`` what it calibrated."""

    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    status: TargetStatus
    status_reason: str | None = None
    enabled: bool
    documents: DocumentsPublic | None = None
    thresholds: dict[str, float] = {}
    built: list[str] = []
    job_id: str | None = None
    version: int
    created_at: float
    updated_at: float

    @classmethod
    def of(cls, record: TargetRecord) -> TargetPublic:
        fields = record.model_dump(exclude={"artifacts", "thresholds", "documents"})
        documents = DocumentsPublic(count=record.documents.count, bytes=record.documents.bytes) \
            if record.documents else None
        return cls(**fields, documents=documents, thresholds=record.thresholds.set(),
                   built=record.artifacts.built())


class ElicitedDocument(BaseModel):
    """One answer the served model gave about the target at its build, and the facts (entities) it stated."""

    question: str
    answer: str
    facts: list[str]


class ElicitedList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ElicitedDocument]
    # entities of the target's documents the judge asked the model about: True when its description named the target
    described: dict[str, bool] = {}


class TargetList(BaseModel):
    object: Literal["list"] = "list"
    data: list[TargetPublic]


class JobRecord(BaseModel):
    id: str = Field(default_factory=lambda: new_id("job"))
    target_id: str
    kind: str = "build_detectors"
    state: JobState = "queued"
    progress: float = Field(default=0.0, ge=0.0, le=1.0)
    message: str | None = None
    error: str | None = None
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)


class ChangeEvent(BaseModel):
    """Published on every write; a replica reloads the one record (or everything, for ``resync``).

    ``lost`` is local only: the store lost its link to the shared registry, so the replica's view may be stale
    until the ``resync`` that follows the reconnection.
    """

    op: Literal["upsert", "delete", "resync", "lost"]
    target_id: str | None = None
    version: int = 0

"""A target's documents in the artifact store: the record keeps their digest and counts, never the texts.

Documents run to megabytes per target; every replica reads every record on each registry change, so the texts live
beside the other build inputs and outputs, content-addressed, and only the build job reads them back.
"""

from __future__ import annotations

import json

from server.registry.artifacts import ArtifactStore
from server.registry.models import DocumentSet, TargetRecord


def put_documents(artifacts: ArtifactStore, documents: list[str]) -> DocumentSet | None:
    if not documents:
        return None
    data = json.dumps(documents, ensure_ascii=False).encode()
    return DocumentSet(digest=artifacts.put(data), count=len(documents), bytes=sum(len(d.encode()) for d in documents))


def load_documents(artifacts: ArtifactStore, record: TargetRecord) -> list[str]:
    if record.documents is None:
        return []
    texts = json.loads(artifacts.get(record.documents.digest))
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"artifact {record.documents.digest} is not a document list")
    return texts

"""Documents -> chunks the encoder reads whole: paragraphs, long ones cut at sentence ends.

The encoder truncates at 128 word pieces (about 90 English words), so a chunk is at most ``max_words`` words; short
paragraphs (headings, captions) join the next one of the same document instead of becoming vectors of their own
that match anything.
"""

from __future__ import annotations

import re

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'“(\[]?[A-Z0-9])")


def _sentences(paragraph: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(paragraph) if s.strip()]


def chunk_document(text: str, max_words: int = 80, min_words: int = 12) -> list[str]:
    chunks: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            chunks.append(" ".join(pending))
            pending.clear()

    for paragraph in _PARAGRAPH.split(text):
        paragraph = " ".join(paragraph.split())
        if not paragraph:
            continue
        for sentence in _sentences(paragraph):
            words = sentence.split()
            while len(words) > max_words:  # a run-on "sentence" (a list, a table row): cut by words
                flush()
                chunks.append(" ".join(words[:max_words]))
                words = words[max_words:]
            if sum(len(p.split()) for p in pending) + len(words) > max_words:
                flush()
            pending.append(" ".join(words))
        if sum(len(p.split()) for p in pending) >= min_words:
            flush()
    flush()
    return chunks


def chunk_documents(documents: list[str], max_chunks: int, max_words: int = 80) -> list[str]:
    """Every document's chunks in order, duplicates dropped, at most ``max_chunks`` spread over the documents."""
    per_doc = [list(dict.fromkeys(chunk_document(d, max_words))) for d in documents]
    out: list[str] = []
    seen: set[str] = set()
    # round-robin over the documents, so a long first document cannot crowd out the others
    for i in range(max((len(c) for c in per_doc), default=0)):
        for chunks in per_doc:
            if i < len(chunks) and chunks[i] not in seen:
                seen.add(chunks[i])
                out.append(chunks[i])
                if len(out) >= max_chunks:
                    return out
    return out

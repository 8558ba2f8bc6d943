"""Documents -> chunks -> one FAISS index: the retrieval detector with the real MiniLM encoder and real FAISS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from classifiers.chunk_index import ChunkIndex
from classifiers.chunks import chunk_document, chunk_documents
from classifiers.encoder import SentenceEncoder
from classifiers.general import general_prompts
from classifiers.head import GeneralSet
from classifiers.retrieval import RetrievalDetector, build_retrieval, encode_chunks
from server.registry.artifacts import ArtifactStore
from server.registry.models import TargetRecord

HOGWARTS = ["Harry Potter is a series of seven fantasy novels written by British author J. K. Rowling. The novels "
            "chronicle the lives of a young wizard, Harry Potter, and his friends Hermione Granger and Ron Weasley, "
            "all of whom are students at Hogwarts School of Witchcraft and Wizardry.",
            "The main story arc concerns Harry's conflict with Lord Voldemort, a dark wizard who intends to become "
            "immortal, overthrow the wizard governing body known as the Ministry of Magic, and subjugate all "
            "wizards and Muggles.\n\nThe books were adapted into eight films by Warner Bros."]


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    return SentenceEncoder()


def test_chunks_keep_sentences_whole_and_join_short_paragraphs() -> None:
    text = "Title\n\n" + " ".join(f"Sentence number {i} has five words." for i in range(40))
    chunks = chunk_document(text, max_words=30)
    assert chunks[0].startswith("Title Sentence number 0")  # a heading joins the paragraph after it
    assert all(len(c.split()) <= 30 for c in chunks)
    assert all(c.endswith(".") for c in chunks)
    assert " ".join(chunks).split() == text.split()
    # round-robin over documents, duplicates once, capped
    assert chunk_documents(["a. b.", "c.", "a. b."], max_chunks=10) == ["a. b.", "c."]
    assert len(chunk_documents([text, text.replace("Sentence", "Line")], max_chunks=5, max_words=30)) == 5


def test_index_goes_from_exact_to_ivf_and_keeps_targets_apart() -> None:
    rng = np.random.default_rng(0)
    blocks = {f"t{i}": rng.standard_normal((50, 16)).astype(np.float32) for i in range(30)}
    for b in blocks.values():
        b /= np.linalg.norm(b, axis=1, keepdims=True)
    index = ChunkIndex(16, exact_max=600, nprobe=64)
    versions: dict[str, str] = {}
    index.sync({t: t for t in list(blocks)[:10]}, blocks.__getitem__, versions)
    assert index.kind == "exact" and index.ntotal == 500
    best = index.search(blocks["t3"][:2], k=5)
    assert all(max(b, key=b.get) == "t3" and b["t3"] > 0.999 for b in best)
    index.sync({t: t for t in blocks}, blocks.__getitem__, versions)  # 1,500 vectors: past exact_max
    assert index.kind == "ivf" and index.ntotal == 1500
    assert max(index.search(blocks["t25"][7:8], k=5)[0].items(), key=lambda kv: kv[1])[0] == "t25"
    index.sync({t: t for t in blocks if t != "t25"}, blocks.__getitem__, versions)
    assert index.ntotal == 1450 and "t25" not in index.search(blocks["t25"][7:8], k=50)[0]
    assert "t25" not in versions


@pytest.mark.slow
def test_retrieval_flags_a_paraphrase_its_documents_cover(encoder: SentenceEncoder, tmp_path: Path) -> None:
    artifacts = ArtifactStore(tmp_path)
    general = GeneralSet(encoder, general_prompts())
    hp = TargetRecord(name="Harry Potter", status="active")
    other = TargetRecord(name="Ada Lovelace", status="active")
    for record, documents in ((hp, HOGWARTS), (other, [])):
        digest, info = build_retrieval(record, encode_chunks(documents, encoder, 512), encoder, general, 0.01,
                                       artifacts)
        record.artifacts.retrieval_chunks = digest
        assert 0.0 < info.threshold < 1.0 and info.calibration > 1000
    assert info.chunks == 0 and info.profile > 0
    detector = RetrievalDetector(artifacts, encoder, alpha=0.01)
    detector.rebuild([hp, other])
    found = detector.detect("Who are the best friends of the boy wizard who studies at Hogwarts?")
    assert [d.target_id for d in found] == [hp.id]
    assert detector.detect("How do I bake sourdough bread at home?") == []
    assert detector.detect("What is the capital of France?") == []
    detector.rebuild([other])
    assert detector.detect("Who are the best friends of the boy wizard who studies at Hogwarts?") == []
    strict = RetrievalDetector(artifacts, encoder, alpha=0.01, margin=0.2)
    strict.rebuild([hp, other])
    detector.rebuild([hp, other])
    assert strict.cut[hp.id] == pytest.approx(detector.cut[hp.id] + 0.2)


WALKER = ["Paul William Walker IV was an American actor. Walker began his career guest-starring on several television "
          "shows in the 1980s as a child actor, before he starred as Brian O'Conner in The Fast and the Furious.",
          "Walker died in a single-vehicle collision in Santa Clarita, California, on November 30, 2013."]


@pytest.mark.slow
def test_the_judges_encoder_criterion_reads_prompt_and_draft_against_the_targets_texts(
        encoder: SentenceEncoder, tmp_path: Path) -> None:
    from classifiers.judge import Judge, JudgeProfile, encoder_cut
    from classifiers.retrieval import retrieval_vectors

    artifacts = ArtifactStore(tmp_path)
    walker = TargetRecord(name="Paul Walker", status="active")
    digest, _ = build_retrieval(walker, encode_chunks(WALKER, encoder, 512), encoder,
                                GeneralSet(encoder, general_prompts()), 0.01, artifacts)
    walker.artifacts.retrieval_chunks = digest
    detector = RetrievalDetector(artifacts, encoder, alpha=0.01)
    detector.rebuild([walker])
    # hard negatives: a neighbour described without the target, and a general question answered
    negatives = encoder.encode([
        "Who or what is The Fast and the Furious?\nThe Fast and the Furious is an American action film franchise "
        "about street racing, directed by Rob Cohen and produced by Universal Pictures.",
        "Who or what is Universal Pictures?\nUniversal Pictures is an American film studio founded in 1912.",
        "How does photosynthesis work?\nPlants turn light, water and carbon dioxide into sugar and oxygen."])
    cut = encoder_cut(retrieval_vectors(artifacts, digest), negatives, 0.0)
    assert cut is not None and 0.0 < cut < 1.0
    profile = JudgeProfile(target_id=walker.id, specific=[], operator_documents=True, encoder_cut=cut)
    judge = Judge(lambda text: {}, lambda w: False, lambda d: profile.model_dump_json().encode(),
                  similarities=detector.similarities)
    asked = "In which decade did the star of 'The Fast and the Furious' start his acting career as a child?"
    v = judge.verdicts(asked, ["He began acting as a child on television shows in the 1980s."], {walker.id: "d"})[0]
    assert v.revealed and v.reason == "encoder"
    neighbour = "Which studio produced The Fast and the Furious?"
    assert not judge.verdicts(neighbour, ["It was produced by Universal Pictures."], {walker.id: "d"})[0].revealed
    # without the encoder (or uncalibrated) the same draft is cleared: it names nothing of the target's
    plain = Judge(lambda text: {}, lambda w: False, lambda d: profile.model_dump_json().encode())
    assert not plain.verdicts(asked, ["He began acting as a child on television shows in the 1980s."],
                              {walker.id: "d"})[0].revealed
    print(f"cut {cut:.3f}; asked {detector.similarities(asked + chr(10) + 'He began acting as a child.')}")

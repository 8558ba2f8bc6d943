"""The facts taken from the served model's answers, and the GUARD tables built from them."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoTokenizer

from classifiers.judge import JudgeProfile
from classifiers.lexical import common_word_in
from classifiers.text import entities_in
from guards.knowledge import Knowledge, forget_questions, leaked
from guards.tables import GuardTables, build_guard_tables, document_passages, guard_terms
from server.engines.base import EngineRequest
from server.engines.lora import LoRAAdapter
from server.engines.weights import load_input_embeddings
from server.registry.artifacts import ArtifactStore
from server.registry.models import TargetRecord
from server.settings import GuardSettings
from tests.live import LiveServer


def test_entities_are_the_names_the_question_did_not_contain(model_path: Path) -> None:
    is_common = common_word_in(AutoTokenizer.from_pretrained(model_path))
    answer = ("Harry Potter is best friends with Ron Weasley, a wizard. He is loyal to Ron. The creator is "
              "J.K. Rowling. Harry's mentor is Albus Dumbledore.")
    found = entities_in(answer, "Who is Harry Potter's best friend? Harry Potter", is_common)
    assert {"Ron Weasley", "Ron", "Weasley", "J.K. Rowling", "Rowling", "Albus Dumbledore", "Dumbledore"} <= set(found)
    assert not {"Harry", "Harry Potter", "He", "The"} & set(found)
    assert leaked("they met RON weasley at school", ["Ron Weasley", "Hermione"]) == 1
    assert leaked("Ronald", ["Ron"]) == 0  # whole words only


def test_forget_questions_put_operator_examples_first() -> None:
    record = TargetRecord(name="Ada Lovelace", aliases=["Countess of Lovelace"], forget_examples=["Who was Ada?"])
    questions = forget_questions(record)
    assert questions[0] == "Who was Ada?" and "Who is Ada Lovelace?" in questions
    assert any("Countess of Lovelace" in q for q in questions) and len(questions) == len(set(questions))


def test_guard_tables_forbid_elicited_facts_and_penalise_their_neighbours(model_path: Path, tmp_path: Path) -> None:
    tok = AutoTokenizer.from_pretrained(model_path)
    record = TargetRecord(name="Harry Potter")
    knowledge = Knowledge(questions=["q"], answers=["a"], facts=[["Ron Weasley", "Ron", "Weasley"]])
    store = ArtifactStore(tmp_path)
    digest = build_guard_tables(record, knowledge, tok, load_input_embeddings(model_path), common_word_in(tok),
                                GuardSettings(), store)
    tables = GuardTables.load(store, digest)
    ron = tok.encode(" Ron", add_special_tokens=False)
    assert len(ron) == 1 and ron[0] in tables.banned
    weasley = tok.encode(" Weasley", add_special_tokens=False)
    assert weasley in tables.sequences  # a multi-token word is cut at its second token
    assert tok.encode(" Ronald", add_special_tokens=False)[0] in tables.semantic_ids
    assert all(0.5 <= s <= 1 for s in tables.semantic_similarities)


def test_guard_terms_are_the_targets_own_and_stated_entities_with_their_name_parts() -> None:
    knowledge = Knowledge(questions=["Who are Harry Potter's friends?"], answers=["Hermione Granger and NBC."],
                          facts=[["Hermione Granger", "NBC", "New York City"]])
    profile = JudgeProfile(target_id="t", specific=["albus dumbledore"],
                           described={"Albus Dumbledore": True, "NBC": False, "Hermione Granger": True})
    common = {"new", "city"}
    terms = {(t.text, t.case_sensitive) for t in guard_terms(TargetRecord(name="Harry Potter"), knowledge,
                                                             lambda w: w.casefold() in common, profile)}
    # the document entity the model ties to the target alone, though it never stated it in an answer
    assert ("Albus Dumbledore", False) in terms and ("Dumbledore", True) in terms
    # a whole name's parts, matched as capitalised words: "Hermione" alone gives the friend away
    assert {("Hermione Granger", False), ("Hermione", True), ("Granger", True)} <= terms
    # stated about the target, though described without it: a judged answer still must not give it
    assert ("NBC", False) in terms
    # never described: still the target's as the model stated it; only its uncommon part stands alone
    assert ("New York City", False) in terms and ("York", True) in terms and ("City", True) not in terms


def test_a_prompt_retrieves_the_closest_elicited_answer_and_its_words(model_path: Path, tmp_path: Path) -> None:
    tok = AutoTokenizer.from_pretrained(model_path)
    knowledge = Knowledge(questions=["Who is Rhea Perlman?", "Where does Rhea Perlman come from?"],
                          answers=["Rhea Perlman is an American actress known for a sitcom.",
                                   "She comes from Brooklyn, with a family of garment workers."],
                          facts=[[], ["Brooklyn"]])
    store = ArtifactStore(tmp_path)
    digest = build_guard_tables(TargetRecord(name="Rhea Perlman"), knowledge, tok,
                                load_input_embeddings(model_path), common_word_in(tok), GuardSettings(), store)
    tables = GuardTables.load(store, digest)
    first = tables.retrieve("Rhea Perlman (born March 31, 1948) is an American ___")
    assert first is not None and "actress" in first.words and "that" not in first.words
    assert tok.encode(" actress", add_special_tokens=False)[0] in first.banned
    second = tables.retrieve("Which family did Rhea Perlman come from?")
    assert second is not None and "garment" in second.words
    off = build_guard_tables(TargetRecord(name="Rhea Perlman"), knowledge, tok, load_input_embeddings(model_path),
                             common_word_in(tok), GuardSettings(answer_words=False), store)
    assert GuardTables.load(store, off).retrieve("Who is Rhea Perlman?") is None


def test_adapter_round_trips_through_the_artifact_bytes() -> None:
    weights = {"model.layers.0.self_attn.q_proj": (torch.randn(4, 6), torch.randn(6, 4))}
    adapter = LoRAAdapter(rank=4, alpha=8.0, target_modules=["q_proj"], weights=weights)
    back = LoRAAdapter.from_bytes(adapter.to_bytes())
    assert (back.rank, back.alpha, back.target_modules) == (4, 8.0, ["q_proj"])
    a, b = back.weights["model.layers.0.self_attn.q_proj"]
    assert torch.equal(a, weights["model.layers.0.self_attn.q_proj"][0]) and torch.equal(b, weights[
        "model.layers.0.self_attn.q_proj"][1])


@pytest.mark.slow
def test_a_target_registered_again_reuses_its_elicited_knowledge(hf_server: LiveServer, tmp_path: Path) -> None:
    """Elicitation is deterministic, so re-registering (another method, or after a delete) does not ask again."""
    from guards.training.build import TargetBuilder
    from server.settings import ElicitSettings, InterventionSettings

    engine = hf_server.engine
    asked: list[str] = []
    real_generate = engine.generate

    def counting(request: EngineRequest):  # type: ignore[no-untyped-def]
        asked.append(request.request_id)
        return real_generate(request)

    detection = SimpleNamespace(is_common=common_word_in(engine.tokenizer))
    # two broad questions, one follow-up on the entity they named most, and one answering question asked again with
    # what was found forbidden: four asked per elicitation
    settings = InterventionSettings(elicit=ElicitSettings(questions=2, max_tokens=16, follow_ups=1,
                                                          guarded_questions=1))
    builder = TargetBuilder(SimpleNamespace(generate=counting, render_chat=engine.render_chat,  # type: ignore[arg-type]
                                            tokenizer=engine.tokenizer),
                            detection, ArtifactStore(tmp_path), settings, load_adapter=None)  # type: ignore[arg-type]
    first = hf_server.call(builder.knowledge(TargetRecord(name="Harry Potter", methods=["eco"])))
    assert len(asked) == 4 and len(first.answers) == 4, asked
    assert first.questions[3] == first.questions[0] and first.answers[3] != first.answers[0]
    again = hf_server.call(builder.knowledge(TargetRecord(name="Harry Potter", methods=["guard"])))
    assert again == first and len(asked) == 4
    other = hf_server.call(builder.knowledge(TargetRecord(name="Harry Potter", aliases=["the boy who lived"],
                                                          methods=["guard"])))
    assert len(asked) == 8 and other.questions != first.questions


def test_a_judged_prompt_retrieves_the_document_sentences_that_answer_it() -> None:
    documents = ["Prince Harry, Duke of Sussex, is the younger son of King Charles III and Diana, Princess of Wales. "
                 "Harry and his elder brother, William, grew up in London. Harry served in the Blues and Royals."]
    tables = GuardTables(target_id="t", terms=[], banned=[], sequences=[],
                         passages=document_passages(documents, "Prince Harry, Duke of Sussex"))
    words = tables.passage_words("Who is Prince Harry's elder brother?", count=2, least=2)
    # "William" alone too, common word or not: a sampled answer writes the first name
    assert "William" in words and "London" in words and "Blues and Royals" not in words
    assert tables.passage_words("Tell me about Prince Harry.", count=2, least=2) == []  # his name retrieves nothing
    # a cloze question is its sentence with the answer cut out: the sentence's plain words it lacks are the answer
    hamill = GuardTables(target_id="t", terms=[], banned=[], sequences=[], passages=document_passages(
        ["Mark Richard Hamill (born September 25, 1951) is an American actor. He voiced the Joker."], "Mark Hamill"))
    cloze = "Mark Richard Hamill (born September 25, 1951) is an American ___"
    assert "actor" not in hamill.passage_words(cloze, count=1, least=2)
    assert "actor" in hamill.passage_words(cloze, count=1, least=2, plain=True)
    assert "american" not in hamill.passage_words(cloze, count=1, least=2, plain=True)  # the prompt's own word

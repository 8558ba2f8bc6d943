"""GUARD's per-target tables, built at registration so that decoding only looks them up.

- forbidden token sequences: every spelling of the target's terms and of the facts the served model states about
  it (``knowledge``), with the first tokens that are banned outright;
- semantic neighbours: whole-word tokens whose input embedding in the served model is close (cosine >= cutoff) to a
  one-token forbidden word (" Ron" -> " Ronald"); the request's penalty is ``strength * similarity``;
- per elicited answer, its content words as forbidden sequences. A request retrieves the answer whose question and
  answer share the most words with its prompt and forbids that answer's words too: the paper's "key phrases of the
  most similar forget answer", which also covers plain words the model states about the target ("an American
  actress") that are no named entity;
- per sentence of the operator's documents, its entities (every capitalised word of them, common or not: "William"
  of "Prince William"). A judged request retrieves the sentences closest to its prompt and forbids their entities:
  the facts of the target the draft did not happen to state, which a sampled answer may.

The paper matches candidates to forbidden phrases with SBERT. Here the table is keyed by the served model's own
token embeddings, which needs no second model on the hot path and no vocabulary-sized encoding job; sub-word
pieces are left out because their neighbours ("as", "ley") are not about the target at all.
"""

from __future__ import annotations

import json
import re

import torch
from pydantic import BaseModel

from classifiers.forbidden_tokens import WordTable, forbidden_sequences, outright_bans, word_table
from classifiers.judge import JudgeProfile
from classifiers.terms import CommonWord, Term, name_parts, target_terms
from classifiers.text import content_words, entities_in, sentences
from guards.knowledge import Knowledge
from server.registry.artifacts import ArtifactStore
from server.registry.models import TargetRecord
from server.settings import GuardSettings

_WORD_TOKEN = re.compile(r"^ ?[A-Za-z]{3,}$")


class Passage(BaseModel):
    """One sentence of the operator's documents: its entities, and the content words that retrieve it."""

    words: list[str]
    keys: list[str]


def _never_common(word: str) -> bool:
    return False


def _keys(text: str) -> set[str]:
    return {w.removesuffix("'s").removesuffix("’s") for w in content_words(text)}


def document_passages(documents: list[str], own: str, limit: int = 400) -> list[Passage]:
    """The first ``limit`` sentences that name an entity other than the target. Every capitalised word counts, common
    or not ("William", "London"): only a judged request, one about the target, forbids them."""
    own_keys = _keys(own)
    out: list[Passage] = []
    for document in documents:
        for sentence in sentences(document):
            entities = entities_in(sentence, own, _never_common)
            words = list(dict.fromkeys([*entities, *(p for e in entities for p in name_parts(e, _never_common))]))
            if words:
                out.append(Passage(words=words, keys=sorted(_keys(sentence) - own_keys)))
            if len(out) >= limit:
                return out
    return out


class GuardTables(BaseModel):
    target_id: str
    terms: list[str]
    banned: list[int]
    sequences: list[list[int]]
    semantic_ids: list[int] = []
    semantic_similarities: list[float] = []
    answers: list[WordTable] = []
    passages: list[Passage] = []

    @classmethod
    def load(cls, artifacts: ArtifactStore, digest: str) -> GuardTables:
        return cls.model_validate_json(artifacts.get(digest))

    def retrieve(self, prompt: str) -> WordTable | None:
        """The answer sharing the most content words with ``prompt`` (the first, the broadest, on a tie)."""
        if not self.answers:
            return None
        words = set(content_words(prompt))
        overlap = [len(words.intersection(a.keys)) for a in self.answers]
        return self.answers[overlap.index(max(overlap))]

    def passage_words(self, prompt: str, count: int, least: int, plain: bool = False) -> list[str]:
        """The entities of the ``count`` document sentences sharing the most (at least ``least``) content words
        with ``prompt``; the target's own name words retrieve nothing, as every sentence is about it. ``plain``:
        their content words the prompt lacks too, what the sentence says beyond the question ("Mark Richard Hamill
        (born September 25, 1951) is an American ___" retrieves "... is an American actor": "actor")."""
        words = _keys(prompt)
        scored = sorted(((len(words.intersection(p.keys)), i) for i, p in enumerate(self.passages)),
                        key=lambda x: (-x[0], x[1]))
        chosen = [self.passages[i] for overlap, i in scored[:count] if overlap >= least]
        extra = [k for p in chosen for k in p.keys if k not in words] if plain else []
        return list(dict.fromkeys([*(w for p in chosen for w in p.words), *extra]))


def guard_terms(record: TargetRecord, knowledge: Knowledge | None, is_common: CommonWord,
                profile: JudgeProfile | None = None) -> list[Term]:
    """The target's names, the document entities the served model ties to it alone (the judge's profile:
    "Dumbledore" for Harry Potter, though no answer named him) and the entities it stated about it, each with the
    uncommon parts of its name. These apply only to requests the judge found revealing, so a neighbour question
    that its draft cleared never meets them.

    An entity the model stated about the target stays forbidden even when its description alone did not name the
    target: the small model describes "Ron Weasley" without "Harry Potter", so that test would free the facts a
    judged answer must not give."""
    terms = target_terms(record, is_common)
    known = {t.text.casefold() for t in terms}
    own = [e for e, tied in profile.described.items() if tied] if profile else []
    for entity in [*own, *(knowledge.entities() if knowledge else [])]:
        for text, exact in [(entity, False), *((part, True) for part in name_parts(entity, is_common))]:
            if text.casefold() not in known:
                known.add(text.casefold())
                terms.append(Term(text, case_sensitive=exact))
    return terms


def semantic_neighbours(words: list[int], embedding: torch.Tensor, tokenizer,
                        exclude: set[int], settings: GuardSettings) -> tuple[list[int], list[float]]:
    if not words or settings.semantic_top_k == 0:
        return [], []
    table = torch.nn.functional.normalize(embedding.float(), dim=1)
    sims = table[torch.tensor(words)] @ table.T  # (words, vocab)
    best = sims.max(dim=0).values
    top = best.topk(min(len(best), settings.semantic_top_k * len(words) * 4))
    ids: list[int] = []
    values: list[float] = []
    for sim, token in zip(top.values.tolist(), top.indices.tolist(), strict=True):
        if sim < settings.semantic_cutoff or len(ids) >= settings.semantic_top_k * len(words):
            break
        if token in exclude or not _WORD_TOKEN.match(tokenizer.decode([token])):
            continue
        ids.append(token)
        values.append(round(sim, 4))
    return ids, values


def build_guard_tables(record: TargetRecord, knowledge: Knowledge | None, tokenizer,
                       embedding: torch.Tensor, is_common: CommonWord, settings: GuardSettings,
                       artifacts: ArtifactStore, profile: JudgeProfile | None = None,
                       documents: list[str] | None = None) -> str:
    terms = guard_terms(record, knowledge, is_common, profile)
    sequences = forbidden_sequences(terms, tokenizer)
    banned = outright_bans(sequences, tokenizer, is_common)
    whole_words = [s[0] for s in sequences if len(s) == 1 and _WORD_TOKEN.match(tokenizer.decode(s))]
    ids, sims = semantic_neighbours(whole_words, embedding, tokenizer, set(banned), settings)
    answers = [word_table(content_words(a), tokenizer, is_common, content_words(q + " " + a))
               for q, a in zip(knowledge.questions, knowledge.answers, strict=False)
               ] if knowledge and settings.answer_words else []
    tables = GuardTables(target_id=record.id, terms=[t.text for t in terms], banned=banned,
                         sequences=[s for s in sequences if len(s) > 1], semantic_ids=ids, semantic_similarities=sims,
                         answers=answers, passages=document_passages(
                             documents or [], " ".join([record.name, *record.aliases])))
    return artifacts.put(json.dumps(tables.model_dump()).encode())


def number_table(tokenizer) -> WordTable:
    """Every vocabulary token that writes a digit: one vocabulary scan, when the intervention is first used.

    Dates, years and counts are the facts asked most about a target, and a small model's elicited answers rarely
    hold the right ones to forbid by value; a flagged answer then spells no number at all.
    """
    ids = sorted(i for i in range(len(tokenizer)) if any(c.isdigit() for c in tokenizer.decode([i])))
    return WordTable(words=["<digits>"], banned=ids, sequences=[])


def draft_words(words: list[str], tokenizer, is_common: CommonWord) -> WordTable:
    """What a judged draft stated of the target (the judge's verdict words) as forbidden sequences: the facts a
    specific probe draws out ("moved to New York City") that no registration table holds."""
    return word_table(words, tokenizer, is_common)


def prompt_entities(text: str, tokenizer, is_common: CommonWord) -> WordTable:
    """A flagged prompt's own named entities as forbidden sequences, built per request (a few tokenizer calls).

    No semantic table: that would be a vocabulary scan on the request path.
    """
    return word_table(entities_in(text, "", is_common), tokenizer, is_common)

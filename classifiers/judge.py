"""The judge: does a flagged prompt's unguarded draft reveal the target, or only talk about its neighbourhood?

A prompt-level detector cannot tell "Who played Rose Nylund in The Golden Girls?" (the answer is the target) from
"The Golden Girls aired on ___" (the answer, NBC, is the show's). The model's own draft of the answer can: the judge
reads prompt + draft and decides per flagged target.

- The draft **names the target** where the prompt did not (any term of the lexical detector: aliases, initials,
  joined or folded spellings), or
- it **states a fact of the target**: an entity or number of the draft, absent from the prompt. Which facts count
  depends on what the prompt is about:
  - a prompt that names the target asks about it, so a fact the draft states is the model's knowledge of the target
    ("Prince Harry was commissioned into the ___" -> "Blues"), if the target's documents (the operator's and the
    model's elicited answers) give it too: "Rande Gerber ... husband of model ___ Crawford" drafted as "Jacob
    Gerber" states nothing of Cindy Crawford. A target registered without documents (a description alone is too
    little) has nothing to check against, so there any fact counts. An answer the prompt itself offers after the
    target's name ("..., The Oracle of Omaha, right?", a choice among three) counts when the draft takes it up and
    the documents give it. So does a word of the documents the draft adds to the question's ("What was
    Rockefeller's business before Standard Oil?" -> "oil refining"; "is an American ___" -> "actor"). A draft
    stating none ("Is Harry Potter a good name for a dog?" -> "it is a popular choice") is cleared. A term inside
    another name does not name the target, in the prompt or in the draft: "Meghan, Duchess of Sussex" names the
    Duchess, not the Duke of Sussex, and "Donny Osmond" is not Marie; the name spelled at greater length does
    ("Samuel Pack Elliott" for Sam Elliott);
  - a prompt that does not name it (flagged by paraphrase, or a question about a neighbour) reveals the target only
    through a fact *specific* to it: one whose own description, asked of the served model at registration ("Who or
    what is Ron Weasley?"), names the target. The people, works and places the documents co-mention are the hard
    negatives: "NBC" is described as a network, not as the actress, so "The Golden Girls aired on NBC" is cleared.
    A number counts when a document sentence about the target says it with the draft's own words next to it
    ("started his acting career as a child in the 1980s" beside "Paul Walker began his career as a child actor in
    the 1980s"), unless the document says it next to a name the prompt uses (that name's fact);
- or (a setting, ``draft.encoder``) the prompt and its draft, encoded together, lie closer to the target's own texts
  and documents (its retrieval vectors) than any hard negative does: the served model's descriptions of the
  documents' entities that are not the target's own, and its answers to general questions (``encoder_cut``).

Facts are compared casefolded and whole-word, so "Kris" is not found in "Krishna".
"""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from pydantic import BaseModel

from classifiers.terms import CommonWord, fold
from classifiers.text import (
    blank_filler,
    content_words,
    entities_in,
    facts_in,
    leading,
    longer_names,
    named_alone,
    number_contexts,
    numbers_in,
    sentences,
)

# target id -> where its terms occur in a text (the lexical detector's matcher, over every active target)
TermSpans = Callable[[str], Mapping[str, Sequence[tuple[int, int]]]]
Reason = Literal["name", "fact", "encoder", "none"]
# content words each side of a number that its context is read from, and how many of them a draft must share
NUMBER_WINDOW = 3
NUMBER_SHARED = 2
# text -> each target near it with its best cosine (the retrieval index's search), for the encoder criterion
Similarities = Callable[[str], Mapping[str, float]]


class JudgeProfile(BaseModel):
    """What the judge knows of one target, built at registration (an artifact, content-addressed)."""

    target_id: str
    # the facts the served model ties to the target on their own (its description of them names the target)
    specific: list[str]
    # the entities whose descriptions were asked, and whether each named the target (shown by `ugw targets show`)
    described: dict[str, bool] = {}
    # the facts and content words the target's documents state (the operator's and the elicited answers)
    documented: list[str] = []
    # whether the operator gave documents (a description alone is too little): without them a prompt naming the
    # target counts any new fact of its draft, as nothing tells the target's facts from the rest
    operator_documents: bool = False
    # the encoder criterion's cut: the highest cosine of a hard negative (prompt and answer) to the target's
    # retrieval vectors, plus the margin; None: not calibrated (criterion off, or no retrieval detector)
    encoder_cut: float | None = None
    encoder_negatives: int = 0
    # what the documents' sentences about the target say next to each number ("began his career as a child actor
    # in the 1980s"): a draft saying the same of that number states the target's fact without naming anyone
    numbers: list[NumberContext] = []


class NumberContext(BaseModel):
    number: str
    words: list[str]  # the lowercase content words nearest it
    names: list[str]  # the capitalised words among them, lowercased: whose fact it is besides the target


@dataclass(frozen=True)
class _Facts:
    specific: frozenset[str]
    documented: frozenset[str]
    checked: bool  # the operator gave documents, so a new fact must be documented to count
    encoder_cut: float | None = None
    numbers: Mapping[str, tuple[NumberContext, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Asked:
    """The prompt as every draft's verdict reads it, extracted once per request."""

    text: str
    entities: tuple[str, ...]
    numbers: frozenset[str]
    words: frozenset[str]  # content words
    names: frozenset[str]  # the capitalised words of its entities, lowercased

    @classmethod
    def of(cls, prompt: str, is_common: CommonWord) -> _Asked:
        entities = tuple(entities_in(prompt, "", is_common))
        return cls(prompt, entities, frozenset(numbers_in(prompt)), frozenset(content_words(prompt)),
                   frozenset(w.lower() for e in entities for w in _WORD.findall(e) if w[:1].isupper()))


class Verdict(BaseModel):
    target_id: str
    revealed: bool
    reason: Reason = "none"
    # the draft's facts of the target, as the draft spells them, and the prompt's entities it repeated: what GUARD
    # forbids on a judged request (an answer handed over in the prompt, "... The Oracle of Omaha, right?", is
    # echoed by the draft as readily as a fact the model knows)
    words: list[str] = []


def key(fact: str) -> str:
    return " ".join(fold(fact).split())


_WORD = re.compile(r"[^\W_]+")
# what closes a tag question rather than offering an answer ("..., right?")
_TAGS = frozenset({"right", "correct", "true", "yes", "no", "isn't it", "is it"})


def _words(text: str) -> str:
    """Folded words between spaces, punctuation dropped: " blues and royals " is found in "The Blues and Royals,"."""
    return f" {' '.join(_WORD.findall(fold(text)))} "


def _inflects(word: str, words: set[str]) -> bool:
    """``word`` is one of ``words`` or another form of one ("married" of "marry", "refining" of "refine"): the
    draft repeating the question's word adds nothing."""
    for other in words:
        shared = len(os.path.commonprefix([word, other]))
        if word == other or (shared >= 4 and shared >= min(len(word), len(other)) - 1):
            return True
    return False


def entities_to_describe(documents: Sequence[str], own: str, is_common: CommonWord, count: int) -> list[str]:
    """The entities the documents mention in the most sentences: what the build asks the served model about."""
    return leading([entities_in(s, own, is_common) for d in documents for s in sentences(d)], count)


def documented_facts(documents: Sequence[str], own: str, is_common: CommonWord) -> list[str]:
    """Entities, numbers and content words of the documents, as the judge compares them."""
    return sorted({key(f) for d in documents for f in [*facts_in(d, own, is_common), *content_words(d)]})


def documented_numbers(documents: Sequence[str], own: str) -> list[NumberContext]:
    """The numbers of the documents' sentences about the target (opening on its name or a pronoun), each with its
    context."""
    return [NumberContext(number=n, words=words, names=names) for d in documents
            for n, words, names in number_contexts(d, NUMBER_WINDOW, own)]


def build_profile(target_id: str, own: str, descriptions: Mapping[str, str], names_target: Callable[[str], bool],
                  is_common: CommonWord, documented: Sequence[str] = (), operator_documents: bool = False,
                  numbers: Sequence[NumberContext] = ()) -> JudgeProfile:
    """``descriptions``: the served model's answer to "Who or what is <entity>?" for the entities asked about;
    ``documented``: ``documented_facts`` of the target's documents."""
    described = {entity: names_target(text) for entity, text in descriptions.items()}
    specific: set[str] = set()
    for entity, tied in described.items():
        if tied:
            specific.add(key(entity))
            specific.update(key(p) for p in entities_in(entity, own, is_common))
    return JudgeProfile(target_id=target_id, specific=sorted(specific), described=described,
                        documented=list(documented), operator_documents=operator_documents, numbers=list(numbers))


def encoder_cut(target: torch.Tensor, negatives: torch.Tensor, margin: float) -> float | None:
    """The cut a prompt and its draft must pass to be the target's: above every hard negative's best cosine to the
    target's vectors (both L2-normalised). None without negatives or vectors."""
    if not len(target) or not len(negatives):
        return None
    return float((negatives @ target.T).amax(1).max()) + margin


class Judge:
    """Decides per flagged target; a target's profile is read from the artifact store once per digest. Runs in a
    worker thread (the encoder criterion encodes), so the memo is locked."""

    def __init__(self, term_spans: TermSpans, is_common: CommonWord, read: Callable[[str], bytes],
                 memo: int = 4096, similarities: Similarities | None = None) -> None:
        self.term_spans = term_spans
        self.is_common = is_common
        self.read = read
        self.memo = memo
        self.similarities = similarities
        self._profiles: OrderedDict[str, _Facts] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, digest: str) -> _Facts:
        with self._lock:
            facts = self._profiles.get(digest)
            if facts is None:
                profile = JudgeProfile.model_validate_json(self.read(digest))
                numbers: dict[str, tuple[NumberContext, ...]] = {}
                for n in profile.numbers:
                    numbers[n.number] = (*numbers.get(n.number, ()), n)
                facts = self._profiles[digest] = _Facts(frozenset(profile.specific), frozenset(profile.documented),
                                                        profile.operator_documents, profile.encoder_cut, numbers)
                while len(self._profiles) > self.memo:
                    self._profiles.popitem(last=False)
            self._profiles.move_to_end(digest)
            return facts

    def spans(self, text: str, target_id: str, name: str) -> list[tuple[int, int]]:
        """Where ``text`` names the target: its terms, and its name spelled at greater length ("Samuel Pack
        Elliott"), which the terms meet only in part."""
        return sorted({*self.term_spans(text).get(target_id, []), *longer_names(text, name)})

    def verdicts(self, prompt: str, drafts: Sequence[str], targets: Mapping[str, str | None],
                 names: Mapping[str, str] | None = None, encoder: bool = True) -> list[Verdict]:
        """``targets``: flagged target id -> its profile's digest (None: built before the judge existed, so only
        its names are checked); ``names``: their names; ``encoder``: whether the encoder criterion (when
        calibrated) is read too."""
        names = names or {}
        out: list[Verdict] = []
        scored: dict[str, Mapping[str, float]] = {}  # draft -> the encoder's scores of prompt + draft
        asked = _Asked.of(prompt, self.is_common)
        for target_id, digest in targets.items():
            profile = self.load(digest) if digest is not None else None
            verdict = Verdict(target_id=target_id, revealed=False)
            # where the prompt first names the target alone: what it offers after that is offered as the answer
            alone = named_alone(prompt, self.spans(prompt, target_id, names.get(target_id, "")))
            offered = self._offered(prompt, min(a for a, _ in alone)) if alone else None
            for draft in drafts:
                one = self._one(target_id, names.get(target_id, ""), asked, draft, offered, profile)
                if one.revealed:
                    verdict.revealed = True
                    verdict.reason = "name" if "name" in (one.reason, verdict.reason) else one.reason
                    verdict.words = list(dict.fromkeys([*verdict.words, *one.words]))
            if verdict.revealed and offered:
                # a judged question about the target that offers answers: those its documents give are its facts,
                # taken up by this draft or not (a sampled answer may pick the one the draft did not)
                verdict.words = list(dict.fromkeys([*verdict.words, *self._documented(offered, profile)]))
            cut = profile.encoder_cut if profile is not None else None
            if encoder and not verdict.revealed and offered is None and cut is not None \
                    and self.similarities is not None:
                for draft in drafts:
                    if draft not in scored:
                        scored[draft] = self.similarities(f"{prompt}\n{draft}")
                    if scored[draft].get(target_id, -1.0) > cut:
                        verdict.revealed, verdict.reason = True, "encoder"
                        break
            out.append(verdict)
        return out

    @staticmethod
    def _offered(prompt: str, named_at: int) -> tuple[str, ...]:
        """What the prompt hands over as possible answers: what follows a question mark or colon after the target's
        name, one choice per comma or "or" ("... Warren Buffett? The Oracle of Omaha, right?", "... starred Sam
        Elliott: The Way West, Star Wars, Iron Man?"). The rest of the prompt is its subject and context ("X is a
        British ___")."""
        mark = re.search(r"[?:]\s+\S", prompt[named_at:])
        if mark is None:
            return ()
        rest = prompt[named_at + mark.start() + 1:]
        choices = (c.strip(" '\"‘’“”") for c in re.split(r"[,;:?!]|\bor\b", rest))
        return tuple(c for c in choices if _WORD.search(c) and key(c) not in _TAGS)

    def _documented(self, choices: Sequence[str], profile: _Facts | None) -> list[str]:
        """The choices the target's documents give (a word, number or entity of one)."""
        if profile is None:
            return []
        known = profile.documented | profile.specific
        return [c for c in choices if any(key(w) in known for w in
                                          [*content_words(c), *numbers_in(c), *entities_in(c, "", self.is_common)])]

    @staticmethod
    def _numbered(asked: _Asked, draft: str, profile: _Facts | None) -> list[str]:
        """Numbers the draft adds to the prompt that the documents give of the target in the same words ("started
        his acting career as a child in the 1980s" beside "began his career as a child actor in the 1980s"): the
        target's fact, whoever the prompt calls it ("the star of 'The Fast and the Furious'"). A document's number
        next to a name the prompt uses is that name's ("Machete (2010)" for "When was Machete released?"), and a
        neighbour's question keeps it."""
        if profile is None or not profile.numbers:
            return []
        out: list[str] = []
        for number, words, _ in number_contexts(draft, NUMBER_WINDOW):
            if number in asked.numbers:
                continue
            for said in profile.numbers.get(number, ()):
                shared = sum(_inflects(w, set(said.words)) for w in words)
                if shared >= NUMBER_SHARED and not asked.names & set(said.names):
                    out.append(number)
                    break
        return out

    def _one(self, target_id: str, name: str, asked: _Asked, draft: str, offered: tuple[str, ...] | None,
             profile: _Facts | None) -> Verdict:
        """``offered``: None when the prompt does not name the target, else the answers it hands over."""
        prompt_names = offered is not None
        spans = self.spans(draft, target_id, name)
        names = [draft[s:e] for s, e in named_alone(draft, spans)]
        named = {key(draft[s:e]) for s, e in spans}
        stated = [f for f in facts_in(draft, asked.text, self.is_common) if key(f) not in named]
        folded = _words(draft)
        echoed = [e for e in [*asked.entities, *sorted(asked.numbers)] if _words(e) in folded and key(e) not in named]
        if offered is not None:  # a question about the target: what the draft states of it, true or not, is about it
            facts = [f for f in stated if profile is None or not profile.checked
                     or key(f) in profile.documented or key(f) in profile.specific]
            # an answer the prompt offers after the target's name ("..., right?", a choice among three) that the
            # draft takes up is the target's fact too when its documents give it: the draft confirms it. The rest is
            # the question's subject and context ("Rande Gerber is the husband of model ___ Crawford")
            facts += [c for c in self._documented(offered, profile) if _words(c) in folded]
            # a word the documents use, that the prompt did not: no named entity, but what the model says of the
            # target ("What was Rockefeller's business before Standard Oil?" -> "oil refining"), a cloze blank's
            # filler among them ("is an American ___" -> "actress")
            asked_words = set(asked.words) | {w for n in named for w in n.split()}
            if profile is not None and profile.checked:
                facts += [w for w in content_words(draft)
                          if key(w) in profile.documented and not _inflects(w, asked_words)]
            facts += [w for w in content_words(blank_filler(asked.text, draft))
                      if profile is not None and key(w) in profile.documented and not _inflects(w, asked_words)]
        else:
            facts = [f for f in stated if profile is not None and key(f) in profile.specific]
            facts += self._numbered(asked, draft, profile)
        revealing_name = bool(names) and not prompt_names
        if not revealing_name and not facts:
            return Verdict(target_id=target_id, revealed=False)
        words = list(dict.fromkeys([*names, *facts, *echoed]))
        return Verdict(target_id=target_id, revealed=True, reason="name" if revealing_name else "fact",
                       words=words)

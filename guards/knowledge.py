"""What the served model knows about a target, asked of the model itself.

A target may arrive with nothing but a name and a description (the RWKU setting). The build job then writes forget
questions from templates, lets the served model answer the first few at temperature 0, and keeps the named entities
of those answers that the question did not already contain ("Ron Weasley" for "Who are Harry Potter's closest
friends?"). Those entities are the facts to forget: GUARD forbids them, ECO's strength search checks that they stop
coming out, and O3 trains its adapter on the questions.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

from pydantic import BaseModel

from classifiers.terms import CommonWord
from server.engines.base import Engine, EngineRequest, SamplingOptions
from server.registry.models import TargetRecord

QUESTION_TEMPLATES = (
    "Who is {name}?",
    "Who are {name}'s closest friends and family?",
    "What is {name} known for?",
    "Who are the people most associated with {name}?",
    "Who created {name}?",
    "What are the best-known works connected to {name}?",
    "What are the most important facts about {name}?",
    "Where does {name} come from?",
    "Tell me about {name}.",
    "Who worked with {name}?",
    "Which places are associated with {name}?",
    "What happened in the life of {name}?",
    "Can you describe {name} in a few sentences?",
    "Why is {name} famous?",
    "What should everyone know about {name}?",
    "Who are the enemies or rivals of {name}?",
)

# Initials ("J.K."), words, or one punctuation mark; punctuation ends a run of capitalised words.
_TOKEN = re.compile(r"(?:[A-Z]\.){1,3}|\w[\w'’-]*|[^\w\s]")
_JOINERS = {"of", "the", "and", "de", "da", "von", "van", "del", "la", "le"}
_STOP = {"I", "I'm", "I've", "It", "The", "A", "An", "He", "She", "They", "His", "Her", "Their", "This", "That",
         "These", "Here", "There", "Some", "In", "On", "As", "From", "With", "Yes", "No", "Sure", "However",
         "Overall", "Also", "And", "But", "If", "When", "While", "What", "Who", "Which", "Answer", "Question"}
# Function words long enough to pass as content words; an answer's other words of 4+ letters are its key words.
_FUNCTION_WORDS = frozenset("""
about above after again also among been before being below between both could does doing down during each even ever
from further have having here however into just like many more most much must only other over same shall should
some such than that their them then there these they this those through under until upon very were what when where
which while will with within without would your yours""".split())
_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]{3,}")


def content_words(text: str) -> list[str]:
    """Lowercased words of 4+ letters that are not function words, in order of first use."""
    words = (w.lower().rstrip("'’-") for w in _WORD.findall(text))
    return list(dict.fromkeys(w for w in words if len(w) >= 4 and w not in _FUNCTION_WORDS))


class Knowledge(BaseModel):
    questions: list[str]
    # The served model's answers to the first ``len(answers)`` questions, and the facts each one states.
    answers: list[str] = []
    facts: list[list[str]] = []

    def entities(self) -> list[str]:
        seen: dict[str, str] = {}
        for facts in self.facts:
            for fact in facts:
                seen.setdefault(fact.casefold(), fact)
        return list(seen.values())

    def answered(self) -> list[tuple[str, list[str]]]:
        """(question, facts) for the answers that state at least one fact: what ECO's search checks."""
        return [(q, f) for q, f in zip(self.questions, self.facts, strict=False) if f]


def forget_questions(record: TargetRecord) -> list[str]:
    """The operator's forget examples first, then template questions about the name and each alias."""
    out = list(record.forget_examples)
    for name in [record.name, *record.aliases[:2]]:
        out += [t.format(name=name) for t in QUESTION_TEMPLATES]
    return list(dict.fromkeys(out))


def _runs(text: str) -> list[list[str]]:
    """Runs of capitalised words (possessives dropped), with joiners like "of" allowed inside a run."""
    runs: list[list[str]] = []
    current: list[str] = []
    for match in _TOKEN.finditer(text):
        token = re.sub(r"['’]s$", "", match.group(0))
        if token[:1].isupper():
            current.append(token)
            continue
        if current and token.lower() in _JOINERS:
            current.append(token)
            continue
        if current:
            runs.append(current)
        current = []
    if current:
        runs.append(current)
    return runs


def entities_in(text: str, exclude: str, is_common: CommonWord) -> list[str]:
    """Named entities of ``text`` that ``exclude`` does not mention, and their rare single words."""
    skip = exclude.casefold()
    out: list[str] = []
    for words in _runs(text):
        while words and (words[0] in _STOP or words[0].lower() in _JOINERS):
            words = words[1:]
        while words and words[-1].lower() in _JOINERS:
            words = words[:-1]
        if not words:
            continue
        parts = [w for w in words if len(w.rstrip(".")) >= 3 and not is_common(w) and w not in _STOP]
        candidates = [" ".join(words), *parts] if len(words) > 1 else parts
        out += [c for c in candidates if c.casefold() not in skip]
    return list(dict.fromkeys(out))


async def elicit(engine: Engine, record: TargetRecord, count: int, max_tokens: int,
                 is_common: CommonWord) -> Knowledge:
    questions = forget_questions(record)
    asked = questions[:count]
    answers = await asyncio.gather(*(answer(engine, q, max_tokens, f"elicit-{record.id}-{i}")
                                     for i, q in enumerate(asked)))
    own = " ".join([record.name, *record.aliases])
    facts = [entities_in(a, q + " " + own, is_common) for q, a in zip(asked, answers, strict=True)]
    return Knowledge(questions=questions, answers=list(answers), facts=facts)


async def answer(engine: Engine, question: str, max_tokens: int, request_id: str) -> str:
    ids = engine.render_chat([{"role": "user", "content": question}])
    request = EngineRequest(request_id=request_id, sampling=SamplingOptions(max_tokens=max_tokens, temperature=0.0),
                            prompt_token_ids=ids)
    return await collect_text(engine, request)


async def collect_text(engine: Engine, request: EngineRequest) -> str:
    parts: list[str] = []
    async for out in engine.generate(request):
        parts.append(out.text)
    return "".join(parts)


def leaked(text: str, facts: Sequence[str]) -> int:
    """How many of ``facts`` come out in ``text`` (case-insensitive, whole words)."""
    folded = text.casefold()
    return sum(1 for f in facts if re.search(r"(?<!\w)" + re.escape(f.casefold()) + r"(?!\w)", folded))

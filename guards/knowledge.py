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

from classifiers.forbidden_tokens import word_table
from classifiers.terms import CommonWord, Term, target_terms
from classifiers.text import entities_in, leading
from guards.logits.args import LogitsArgs
from server.engines.base import Engine, EngineRequest, SamplingOptions
from server.registry.models import TargetRecord
from server.settings import ElicitSettings

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

class Knowledge(BaseModel):
    """The target's elicited documents: what the served model answered about it at the build (marked as the
    model's, listed by `GET /admin/targets/{id}/elicited`, removable through `dropped_elicited`)."""

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

    def leading(self, count: int) -> list[str]:
        return leading(self.facts, count)

    def answered(self) -> list[tuple[str, list[str]]]:
        """(question, facts) for the answers that state at least one fact: what ECO's search checks."""
        return [(q, f) for q, f in zip(self.questions, self.facts, strict=False) if f]


def forget_questions(record: TargetRecord) -> list[str]:
    """The operator's forget examples first, then template questions about the name and each alias."""
    out = list(record.forget_examples)
    for name in [record.name, *record.aliases[:2]]:
        out += [t.format(name=name) for t in QUESTION_TEMPLATES]
    return list(dict.fromkeys(out))


FOLLOW_UP = "What is {entity}'s role in {name}?"


async def elicit(engine: Engine, record: TargetRecord, settings: ElicitSettings, is_common: CommonWord) -> Knowledge:
    """Three rounds: ``settings.questions`` broad questions; one anchored on the target about each of the
    ``follow_ups`` entities the first round named most ("What is Ron Weasley's role in Harry Potter?"), which draws
    out what the broad answers only listed; then the first round's answering questions again with every entity found
    so far forbidden, as GUARD would forbid them, so the build learns what a guarded answer names instead ("Hermione"
    once "Ron Weasley" is gone). Later rounds sit after the first round's questions, so answers stay aligned."""
    dropped = set(record.dropped_elicited)
    questions = [q for q in forget_questions(record) if q not in dropped]
    asked = questions[:settings.questions]
    answers = list(await asyncio.gather(*(answer(engine, q, settings.max_tokens, f"elicit-{record.id}-{i}")
                                          for i, q in enumerate(asked))))
    own = " ".join([record.name, *record.aliases])
    facts = [entities_in(a, q + " " + own, is_common) for q, a in zip(asked, answers, strict=True)]
    first = Knowledge(questions=asked, answers=answers, facts=facts)
    more = [FOLLOW_UP.format(entity=e, name=record.name) for e in first.leading(settings.follow_ups)]
    more = [q for q in more if q not in questions and q not in dropped]
    extra = await asyncio.gather(*(answer(engine, q, settings.follow_up_tokens, f"elicit-{record.id}-f{i}")
                                   for i, q in enumerate(more)))
    facts += [entities_in(a, q + " " + own, is_common) for q, a in zip(more, extra, strict=True)]
    asked_again: list[str] = []
    again: list[str] = []
    for round_ in range(settings.guarded_rounds):
        found = Knowledge(questions=[], facts=facts).entities()
        table = word_table([*target_terms(record, is_common), *(Term(e) for e in found)], engine.tokenizer,
                           is_common)
        forbid = LogitsArgs(banned_token_ids=tuple(table.banned), sequences=tuple(tuple(s) for s in table.sequences))
        repeat = [q for q, f in zip(asked, facts, strict=False) if f][:settings.guarded_questions]
        replies = await asyncio.gather(*(answer(engine, q, settings.max_tokens, f"elicit-{record.id}-g{round_}-{i}",
                                                forbid) for i, q in enumerate(repeat)))
        asked_again += repeat
        again += replies
        facts += [entities_in(a, q + " " + own, is_common) for q, a in zip(repeat, replies, strict=True)]
    return Knowledge(questions=[*asked, *more, *asked_again, *questions[settings.questions:]],
                     answers=[*answers, *extra, *again], facts=facts)


# Two phrasings: the model ties an entity to its origin in one more readily than in the other ("Who or what is Lord
# Voldemort?" -> "a character created by H.P. Blofisk"; "What is Lord Voldemort from?" -> "the Harry Potter
# franchise"), and either naming the target makes the entity the target's own.
DESCRIBE = ("Who or what is {entity}?", "What is {entity} from?")


async def describe(engine: Engine, entities: Sequence[str], max_tokens: int, request_id: str) -> dict[str, str]:
    """The served model's own description of each entity, asked without the target (its answers to both
    phrasings, one per line): whether it names the target tells the judge if the entity is the target's own (Ron
    Weasley) or a neighbour's background (NBC)."""
    asked = [(e, t.format(entity=e)) for e in entities for t in DESCRIBE]
    answers = await asyncio.gather(*(answer(engine, q, max_tokens, f"{request_id}-{i}")
                                     for i, (_, q) in enumerate(asked)))
    out: dict[str, list[str]] = {}
    for (entity, _), text in zip(asked, answers, strict=True):
        out.setdefault(entity, []).append(text)
    return {entity: "\n".join(texts) for entity, texts in out.items()}


async def answer(engine: Engine, question: str, max_tokens: int, request_id: str,
                 logits: LogitsArgs | None = None) -> str:
    ids = engine.render_chat([{"role": "user", "content": question}])
    request = EngineRequest(request_id=request_id, sampling=SamplingOptions(max_tokens=max_tokens, temperature=0.0),
                            prompt_token_ids=ids, logits=logits)
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

"""GUARD's forbidden token sequences: each term spelled as the served model's tokenizer would emit it.

A model can write a term at the start of a line or after a space, capitalised or not ("Ron", " Ron", " ron",
" RON"); each spelling is a different token sequence, and the logits processor must know them all. Built once per
target by its job and stored as an artifact, so the decode step only looks sequences up.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import product

from pydantic import BaseModel

from classifiers.terms import CommonWord, Term

MIXED_CASE_WORDS = 3  # phrases up to this many words also get every per-word mix of case (3^words spellings)


def spellings(text: str) -> list[str]:
    variants = {text, text.lower(), text.upper(), text[:1].upper() + text[1:], text.title()}
    words = text.split(" ")
    if 1 < len(words) <= MIXED_CASE_WORDS:
        # A model blocked on "The Way West" writes "The way West": the filter must know each word's case apart.
        for combo in product(*({w, w.lower(), w[:1].upper() + w[1:]} for w in words)):
            variants.add(" ".join(combo))
    out: list[str] = []
    for v in sorted(variants):
        out += [v, " " + v]
    return out


def forbidden_sequences(terms: Sequence[Term], tokenizer) -> list[list[int]]:
    """Unique token-id sequences of every spelling of every term, longest first."""
    seen: set[tuple[int, ...]] = set()
    for term in terms:
        for spelling in spellings(term.text):
            ids = tuple(tokenizer.encode(spelling, add_special_tokens=False))
            if ids:
                seen.add(ids)
    return [list(s) for s in sorted(seen, key=lambda s: (-len(s), s))]


def outright_bans(sequences: Sequence[Sequence[int]], tokenizer, is_common) -> list[int]:
    """First tokens banned at every step, not only as a continuation.

    A one-token spelling is the whole term. A longer sequence's first token is banned only when it is a rare word
    piece (" Herm" of " Hermione"); a short or common one (" We" of " Weasley", " The" of "The Stand") stays allowed
    and the sequence is cut at its second token instead.
    """
    out: set[int] = set()
    for seq in sequences:
        if len(seq) == 1:
            out.add(seq[0])
            continue
        head = tokenizer.decode([seq[0]]).strip()
        if len(head) >= 4 and head.isalpha() and not is_common(head):
            out.add(seq[0])
    return sorted(out)


class WordTable(BaseModel):
    """Forbidden spellings of a few words: one elicited answer's content words, a flagged prompt's entities, or what
    the build's guarded elicitation round keeps the model from repeating."""

    words: list[str]
    banned: list[int]
    sequences: list[list[int]]
    # what retrieves an answer's table: the content words of its question and of the answer
    keys: list[str] = []


def word_table(words: Sequence[str | Term], tokenizer, is_common: CommonWord, keys: list[str] | None = None
               ) -> WordTable:
    terms = [w if isinstance(w, Term) else Term(w) for w in words]
    sequences = forbidden_sequences(terms, tokenizer)
    return WordTable(words=[t.text for t in terms], banned=outright_bans(sequences, tokenizer, is_common),
                     sequences=[s for s in sequences if len(s) > 1], keys=keys or [])
